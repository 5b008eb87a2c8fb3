-- wrk script for the post scenario: every request is a POST carrying a 64 KiB
-- body (wrk adds the Content-Length). The app (bench/apps/post.py) reads it all
-- and answers with the number of bytes it read.
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
