-- Correct a tenant's counters: settlement of actual tokens and cost, or (Cluster mode) undoing an admission whose
-- deployments were all saturated. Runs after window.lua. Counters never go below zero; tokens given back come off
-- the oldest buckets of the window first.
-- KEYS: 1 the tenant's window, 2 spent micro-USD (day), 3 spent micro-USD (month).
-- ARGV: 1 requests delta, 2 tokens delta, 3 cost delta (micro-USD), 4 window ttl, 5 day ttl, 6 month ttl,
--       7 bucket, 8 buckets counted.

local function adjust(key, delta, ttl)
  if tonumber(delta) == 0 then
    return
  end
  if redis.call('INCRBY', key, delta) < 0 then
    redis.call('SET', key, 0)
  end
  redis.call('EXPIRE', key, ttl)
end

local requests, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
if requests ~= 0 or tokens ~= 0 then
  local bucket, span, ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[4])
  local sum_requests, sum_tokens, lo, at, at_requests, at_tokens = window_load(KEYS[1], bucket, span, ttl)
  window_add(KEYS[1], span, ttl, sum_requests, sum_tokens, lo, at, at_requests, at_tokens, requests, tokens)
end
adjust(KEYS[2], ARGV[3], ARGV[5])
adjust(KEYS[3], ARGV[3], ARGV[6])
return 1
