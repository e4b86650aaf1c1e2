-- mixed.lua - per request, a random key among the args[1] keys k%015d
-- (loaded beforehand), and a PUT of an args[3]-byte value with probability
-- args[2] percent, else a GET.  args[2] = 0 gives GET-only on the same keys.
local n, pct, body
function init(args)
  n = tonumber(args[1] or "1000")
  pct = tonumber(args[2] or "10") / 100
  body = string.rep("x", tonumber(args[3] or "11"))
  math.randomseed(os.time())
end
function request()
  local path = string.format("/k%015d", math.random(0, n - 1))
  if pct > 0 and math.random() < pct then
    return wrk.format("PUT", path, nil, body)
  end
  return wrk.format("GET", path)
end
