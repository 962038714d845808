-- Admission in one atomic step: tenant RPM/TPM, daily and monthly budgets, then the first deployment with capacity.
-- Nothing is counted unless everything passes. Runs after quota.lua.
-- KEYS: 1 tenant requests (window), 2 tenant tokens (window), 3 spent micro-USD (day), 4 spent micro-USD (month),
--       then two keys per deployment (see quota.lua).
-- ARGV: 1 tokens, 2 estimated cost (micro-USD), 3 rpm limit, 4 tpm limit, 5 day budget, 6 month budget (-1 = none),
--       7 window ttl, 8 day ttl, 9 month ttl (seconds), 10 deployment count, then two limits per deployment.
-- Returns {allowed, reason, chosen deployment (0 = none), {saturated deployments}, requests, tokens, day, month}.

local tokens = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local rpm_limit, tpm_limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local day_budget, month_budget = tonumber(ARGV[5]), tonumber(ARGV[6])
local count = tonumber(ARGV[10])

local requests = tonumber(redis.call('GET', KEYS[1]) or '0')
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local day = tonumber(redis.call('GET', KEYS[3]) or '0')
local month = tonumber(redis.call('GET', KEYS[4]) or '0')

local reason = ''
if rpm_limit >= 0 and requests + 1 > rpm_limit then
  reason = 'tenant_rpm'
elseif tpm_limit >= 0 and used + tokens > tpm_limit then
  reason = 'tenant_tpm'
elseif day_budget >= 0 and day + cost > day_budget then
  reason = 'budget_day'
elseif month_budget >= 0 and month + cost > month_budget then
  reason = 'budget_month'
end

local chosen, saturated = 0, {}
if reason == '' then
  chosen, saturated = walk_deployments(5, 11, count, tokens)
  if count > 0 and chosen == 0 then
    reason = 'deployments_saturated'
  end
end
if reason ~= '' then
  return {0, reason, chosen, saturated, requests, used, day, month}
end

requests = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
used = redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[7])
day = redis.call('INCRBY', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[8])
month = redis.call('INCRBY', KEYS[4], ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[9])
if chosen > 0 then
  count_deployment(5, 11, chosen, tokens, ARGV[7])
end
return {1, '', chosen, saturated, requests, used, day, month}
