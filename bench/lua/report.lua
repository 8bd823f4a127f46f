-- Appended by bench/run.py to every wrk script: prints one machine-readable line at the end.
done = function(summary, latency, requests)
  local e = summary.errors
  local p50, p90, p99, pmax, mean = 0, 0, 0, 0, 0
  if summary.requests > 0 then
    p50 = latency:percentile(50)
    p90 = latency:percentile(90)
    p99 = latency:percentile(99)
    pmax = latency.max
    mean = latency.mean
  end
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"connect\":%d,\"read\":%d," ..
    "\"write\":%d,\"status\":%d,\"timeout\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d," ..
    "\"max_us\":%d,\"mean_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, p50, p90, p99, pmax, mean))
end
