-- put.lua - PUT of the URL given to wrk with a raw body of args[1] bytes
-- (default 11: "hello-value").  Static: the request is built once.
function init(args)
  local n = tonumber(args[1] or "11")
  wrk.method = "PUT"
  wrk.body = string.sub(string.rep("hello-value", math.ceil(n / 11)), 1, n)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
