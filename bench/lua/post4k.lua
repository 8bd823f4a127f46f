-- 4 KiB POST body, echoed back by bench.apps:echo.
wrk.method = "POST"
wrk.body = string.rep("e", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
