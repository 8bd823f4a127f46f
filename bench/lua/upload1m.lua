-- 1 MiB POST body, read by bench.apps:upload in 64 KiB read(n) calls.
wrk.method = "POST"
wrk.body = string.rep("u", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
