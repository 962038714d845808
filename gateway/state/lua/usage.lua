-- Add one batch of usage to a day's hash atomically, so that a batch is either counted whole or not at all.
-- KEYS: 1 the day's hash. ARGV: 1 ttl (s), then field and integer increment pairs.

for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
