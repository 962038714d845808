-- Deployment quotas: prepended (after window.lua) to admit.lua and reserve.lua, which share these functions.
-- A deployment i (1-based) owns KEYS[first_key + i - 1] (its sliding window), and ARGV[first_arg + 2(i-1)] (its rpm
-- limit) and the argument after it (its tpm limit); -1 means no limit.

local function deployment_limits(first_arg, i)
  local at = first_arg + 2 * (i - 1)
  return tonumber(ARGV[at]), tonumber(ARGV[at + 1])
end

-- Walk the deployments in plan order: the first one under its limits is chosen; every one at its limit is saturated.
-- Returns the chosen one (0 = none), the saturated ones, the first bucket from which one of them would take the
-- request when every one is saturated, and the chosen one's window as window_load returned it (a table).
local function walk_deployments(first_key, first_arg, count, tokens, bucket, span, ttl)
  local chosen, window = 0, nil
  local saturated = {}
  local passes_at = 0
  for i = 1, count do
    local rpm_limit, tpm_limit = deployment_limits(first_arg, i)
    if rpm_limit >= 0 or tpm_limit >= 0 then
      local key = KEYS[first_key + i - 1]
      local requests, used, lo, at, at_requests, at_tokens = window_load(key, bucket, span, ttl)
      local over_requests, over_tokens = excess(rpm_limit, requests, 1), excess(tpm_limit, used, tokens)
      if over_requests > 0 or over_tokens > 0 then
        saturated[#saturated + 1] = i
        if chosen == 0 then
          local passes = window_passes_at(key, bucket, span, lo, over_requests, over_tokens)
          if passes_at == 0 or passes < passes_at then
            passes_at = passes
          end
        end
      elseif chosen == 0 then
        chosen, window = i, {key, requests, used, lo, at, at_requests, at_tokens}
      end
    elseif chosen == 0 then
      chosen = i
    end
  end
  return chosen, saturated, passes_at, window
end

-- Count one request and its tokens against the chosen deployment, if it has limits at all (`window` is not nil).
local function count_deployment(window, tokens, span, ttl)
  if window ~= nil then
    window_add(window[1], span, ttl, window[2], window[3], window[4], window[5], window[6], window[7], 1, tokens)
  end
end
