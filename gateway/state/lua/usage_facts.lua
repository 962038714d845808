-- Add one batch of usage and its routing facts to a day's hashes atomically: a batch is counted whole or not at all.
-- KEYS: 1 the day's usage hash, 2 the day's routing facts hash (same slot).
-- ARGV: 1 usage ttl (s), 2 facts ttl (s), 3 the cap on distinct facts a day, 4 the number of usage pairs,
-- then usage field/increment pairs, then per fact five field/increment pairs, its request count first.
local usage_end = 4 + 2 * tonumber(ARGV[4])
for i = 5, usage_end, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if #ARGV > usage_end then
  local cap = tonumber(ARGV[3])
  for i = usage_end + 1, #ARGV, 10 do
    local known = redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1
    if not known and tonumber(redis.call('HGET', KEYS[2], '#facts') or '0') < cap then
      redis.call('HINCRBY', KEYS[2], '#facts', 1)
      known = true
    end
    if known then
      for j = i, i + 8, 2 do
        redis.call('HINCRBY', KEYS[2], ARGV[j], ARGV[j + 1])
      end
    else
      redis.call('HINCRBY', KEYS[2], '#dropped', ARGV[i + 1])
    end
  end
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 1
