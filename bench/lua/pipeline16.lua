-- HTTP/1.1 pipelining: 16 GET requests written back to back on each connection; wrk counts
-- every response and sends the next batch when all 16 have arrived.
init = function(args)
  local r = {}
  for i = 1, 16 do
    r[i] = wrk.format(nil, wrk.path)
  end
  req = table.concat(r)
end

request = function()
  return req
end
