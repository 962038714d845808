-- Deployment quotas: prepended to admit.lua and reserve.lua, which share these two functions.
-- A deployment i (1-based) owns KEYS[first_key + 2(i-1)] (requests in this window) and the key after it (tokens),
-- and ARGV[first_arg + 2(i-1)] (its rpm limit) and the argument after it (its tpm limit); -1 means no limit.

local function deployment_limits(first_arg, i)
  local at = first_arg + 2 * (i - 1)
  return tonumber(ARGV[at]), tonumber(ARGV[at + 1])
end

-- Walk the deployments in plan order: the first one under its limits is chosen; every one at its limit is saturated.
local function walk_deployments(first_key, first_arg, count, tokens)
  local chosen = 0
  local saturated = {}
  for i = 1, count do
    local rpm_limit, tpm_limit = deployment_limits(first_arg, i)
    local full = false
    if rpm_limit >= 0 or tpm_limit >= 0 then
      local at = first_key + 2 * (i - 1)
      local requests = tonumber(redis.call('GET', KEYS[at]) or '0')
      local used = tonumber(redis.call('GET', KEYS[at + 1]) or '0')
      full = (rpm_limit >= 0 and requests + 1 > rpm_limit) or (tpm_limit >= 0 and used + tokens > tpm_limit)
    end
    if full then
      saturated[#saturated + 1] = i
    elseif chosen == 0 then
      chosen = i
    end
  end
  return chosen, saturated
end

-- Count one request and its tokens against deployment i, if it has limits at all.
local function count_deployment(first_key, first_arg, i, tokens, ttl)
  local rpm_limit, tpm_limit = deployment_limits(first_arg, i)
  if rpm_limit < 0 and tpm_limit < 0 then
    return
  end
  local at = first_key + 2 * (i - 1)
  redis.call('INCR', KEYS[at])
  redis.call('EXPIRE', KEYS[at], ttl)
  redis.call('INCRBY', KEYS[at + 1], tokens)
  redis.call('EXPIRE', KEYS[at + 1], ttl)
end
