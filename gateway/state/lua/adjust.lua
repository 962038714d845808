-- Correct a tenant's counters: settlement of actual tokens and cost, or (Cluster mode) undoing an admission whose
-- deployments were all saturated. Counters never go below zero.
-- KEYS: 1 requests (window), 2 tokens (window), 3 spent micro-USD (day), 4 spent micro-USD (month).
-- ARGV: 1 requests delta, 2 tokens delta, 3 cost delta (micro-USD), 4 window ttl, 5 day ttl, 6 month ttl.

local function adjust(key, delta, ttl)
  if tonumber(delta) == 0 then
    return
  end
  if redis.call('INCRBY', key, delta) < 0 then
    redis.call('SET', key, 0)
  end
  redis.call('EXPIRE', key, ttl)
end

adjust(KEYS[1], ARGV[1], ARGV[4])
adjust(KEYS[2], ARGV[2], ARGV[4])
adjust(KEYS[3], ARGV[3], ARGV[5])
adjust(KEYS[4], ARGV[3], ARGV[6])
return 1
