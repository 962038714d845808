-- Reserve the first deployment with capacity, on its own: fallbacks, and the second step of admission in Cluster
-- mode (where tenant keys and deployment keys live in different slots). Runs after window.lua and quota.lua.
-- KEYS: one window per deployment (see quota.lua).
-- ARGV: 1 tokens, 2 window ttl, 3 bucket, 4 buckets counted, 5 deployment count, then two limits each.
-- Returns {chosen deployment (0 = every one saturated), {saturated deployments}, bucket from which one would pass}.

local tokens, ttl, bucket, span = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local chosen, saturated, passes_at, window = walk_deployments(1, 6, tonumber(ARGV[5]), tokens, bucket, span, ttl)
count_deployment(window, tokens, span, ttl)
return {chosen, saturated, passes_at}
