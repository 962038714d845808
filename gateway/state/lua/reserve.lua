-- Reserve the first deployment with capacity, on its own: fallbacks, and the second step of admission in Cluster
-- mode (where tenant keys and deployment keys live in different slots). Runs after quota.lua.
-- KEYS: two per deployment (see quota.lua). ARGV: 1 tokens, 2 window ttl, 3 deployment count, then two limits each.
-- Returns {chosen deployment (0 = every one saturated), {saturated deployments}}.

local tokens = tonumber(ARGV[1])
local chosen, saturated = walk_deployments(1, 4, tonumber(ARGV[3]), tokens)
if chosen > 0 then
  count_deployment(1, 4, chosen, tokens, ARGV[2])
end
return {chosen, saturated}
