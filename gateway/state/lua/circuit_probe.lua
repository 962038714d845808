-- Let exactly one caller probe a half-open circuit per cooldown period, on the callers' clock.
-- KEYS: 1 open-until, 2 probe claim (holds the time until which the claim stands).
-- ARGV: 1 now, 2 now + cooldown, 3 claim ttl (ms; only garbage collection, the stored time decides).
-- Returns 1 when the caller may send its request (the probe, or the circuit is closed), else 0.

local now = tonumber(ARGV[1])
local open_until = tonumber(redis.call('GET', KEYS[1]) or '0')
if open_until == 0 then
  return 1
end
if now < open_until then
  return 0
end
if tonumber(redis.call('GET', KEYS[2]) or '0') > now then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
