-- Deployment quotas: prepended (after window.lua) to admit.lua and reserve.lua, which share these functions.
-- A deployment i (1-based) owns KEYS[first_key + i - 1] (its sliding window), and ARGV[first_arg + 2(i-1)] (its rpm
-- limit) and the argument after it (its tpm limit); -1 means no limit.

local function deployment_limits(first_arg, i)
  local at = first_arg + 2 * (i - 1)
  return tonumber(ARGV[at]), tonumber(ARGV[at + 1])
end

-- Walk the deployments in plan order: the first one under its limits is chosen; every one at its limit is saturated.
-- When every one is, also the first bucket from which one of them would take the request.
local function walk_deployments(first_key, first_arg, count, tokens, bucket, span)
  local chosen, chosen_lo = 0, nil
  local saturated = {}
  local passes_at = 0
  for i = 1, count do
    local rpm_limit, tpm_limit = deployment_limits(first_arg, i)
    if rpm_limit >= 0 or tpm_limit >= 0 then
      local key = KEYS[first_key + i - 1]
      local requests, used, lo = window_load(key, bucket, span)
      local over_requests, over_tokens = excess(rpm_limit, requests, 1), excess(tpm_limit, used, tokens)
      if over_requests > 0 or over_tokens > 0 then
        saturated[#saturated + 1] = i
        if chosen == 0 then
          local at = window_passes_at(key, bucket, span, lo, over_requests, over_tokens)
          if passes_at == 0 or at < passes_at then
            passes_at = at
          end
        end
      elseif chosen == 0 then
        chosen, chosen_lo = i, lo
      end
    elseif chosen == 0 then
      chosen = i
    end
  end
  return chosen, saturated, passes_at, chosen_lo
end

-- Count one request and its tokens against deployment i, if it has limits at all.
local function count_deployment(first_key, first_arg, i, tokens, bucket, span, lo, ttl)
  local rpm_limit, tpm_limit = deployment_limits(first_arg, i)
  if rpm_limit < 0 and tpm_limit < 0 then
    return
  end
  window_add(KEYS[first_key + i - 1], bucket, span, lo, 1, tokens, ttl)
end
