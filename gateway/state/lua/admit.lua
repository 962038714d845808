-- Admission in one atomic step: tenant RPM/TPM, daily and monthly budgets, then the first deployment with capacity.
-- Nothing is counted unless everything passes. Runs after window.lua and quota.lua.
-- KEYS: 1 the tenant's window, 2 spent micro-USD (day), 3 spent micro-USD (month), then one window per deployment.
-- ARGV: 1 tokens, 2 estimated cost (micro-USD), 3 rpm limit, 4 tpm limit, 5 day budget, 6 month budget (-1 = none),
--       7 window ttl, 8 day ttl, 9 month ttl (seconds), 10 bucket, 11 buckets counted, 12 deployment count,
--       then two limits per deployment.
-- Returns {allowed, reason, chosen deployment (0 = none), {saturated deployments}, requests, tokens, day, month,
--          bucket from which a request refused by a rate limit would pass (0 = none)}.

local tokens = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local rpm_limit, tpm_limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local day_budget, month_budget = tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl, bucket, span = tonumber(ARGV[7]), tonumber(ARGV[10]), tonumber(ARGV[11])
local count = tonumber(ARGV[12])

local requests, used, lo, at, at_requests, at_tokens = window_load(KEYS[1], bucket, span, ttl)
local day = tonumber(redis.call('GET', KEYS[2]) or '0')
local month = tonumber(redis.call('GET', KEYS[3]) or '0')

local reason = ''
local passes_at = 0
if rpm_limit >= 0 and requests + 1 > rpm_limit then
  reason = 'tenant_rpm'
elseif tpm_limit >= 0 and used + tokens > tpm_limit then
  reason = 'tenant_tpm'
elseif day_budget >= 0 and day + cost > day_budget then
  reason = 'budget_day'
elseif month_budget >= 0 and month + cost > month_budget then
  reason = 'budget_month'
end
if reason == 'tenant_rpm' or reason == 'tenant_tpm' then
  passes_at = window_passes_at(KEYS[1], bucket, span, lo, excess(rpm_limit, requests, 1),
    excess(tpm_limit, used, tokens))
end

local chosen, saturated, window = 0, {}, nil
if reason == '' then
  chosen, saturated, passes_at, window = walk_deployments(4, 13, count, tokens, bucket, span, ttl)
  if count > 0 and chosen == 0 then
    reason = 'deployments_saturated'
  end
end
if reason ~= '' then
  return {0, reason, chosen, saturated, requests, used, day, month, passes_at}
end

window_add(KEYS[1], span, ttl, requests, used, lo, at, at_requests, at_tokens, 1, tokens)
requests, used = requests + 1, used + tokens
day = redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[8])
month = redis.call('INCRBY', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[9])
count_deployment(window, tokens, span, ttl)
return {1, '', chosen, saturated, requests, used, day, month, 0}
