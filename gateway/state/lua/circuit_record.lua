-- Feed one attempt's outcome into a deployment's circuit breaker, atomically across replicas.
-- KEYS: 1 open-until (unix seconds; absent = closed), 2 failure times (sorted set), 3 probe claim.
-- ARGV: 1 ok (1/0), 2 failures that open the circuit, 3 window (s), 4 now, 5 now + cooldown,
--       6 a unique member for this failure, 7 ttl of an open circuit (s).
-- Returns {phase, open_until, failures}; phase is 'closed', 'open' or 'half_open'.

local ok = ARGV[1] == '1'
local threshold, window, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local stored = redis.call('GET', KEYS[1])
local open_until = tonumber(stored or '0')

local function open()
  redis.call('SET', KEYS[1], ARGV[5], 'EX', ARGV[7])
  redis.call('DEL', KEYS[3])
  local failures = redis.call('ZCARD', KEYS[2])
  redis.call('DEL', KEYS[2])
  return {'open', ARGV[5], failures}
end

if open_until > 0 and now < open_until then
  -- open: late outcomes of attempts that started before it opened change nothing
  return {'open', stored, redis.call('ZCARD', KEYS[2])}
end
if open_until > 0 then
  -- half-open: the probe's outcome decides
  if ok then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    return {'closed', '0', 0}
  end
  return open()
end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if ok then
  return {'closed', '0', redis.call('ZCARD', KEYS[2])}
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
redis.call('PEXPIRE', KEYS[2], math.max(1, math.ceil(window * 1000)))
if redis.call('ZCARD', KEYS[2]) >= threshold then
  return open()
end
return {'closed', '0', redis.call('ZCARD', KEYS[2])}
