-- Sliding one-minute windows (library, prepended to the scripts that count requests and tokens; gateway/state/
-- window.py keeps the same ones in process). A window is one hash: fields 'lo' (the oldest bucket still counted),
-- 'r' and 't' (requests and tokens summed over the counted buckets), 'r<bucket>' and 't<bucket>' per one-second
-- bucket. `span` is how many buckets are counted, the current one included. Per request: one HMGET and one HSET;
-- dropping the buckets that left the window (and refreshing the TTL) happens once a second.

-- Load a window at `bucket`, dropping the buckets that left it. Returns the sums, the oldest bucket counted (nil when
-- nothing is), the bucket this caller counts in (its own; the oldest counted when its clock runs behind the others)
-- and what that bucket holds.
local function window_load(key, bucket, span, ttl)
  local lo_now = bucket - span + 1
  local stored = redis.call('HMGET', key, 'lo', 'r', 't', 'r' .. bucket, 't' .. bucket)
  local lo = tonumber(stored[1])
  if lo == nil then
    return 0, 0, nil, bucket, 0, 0
  end
  local requests, tokens = tonumber(stored[2] or '0'), tonumber(stored[3] or '0')
  if lo > bucket then
    local oldest = redis.call('HMGET', key, 'r' .. lo, 't' .. lo)
    return requests, tokens, lo, lo, tonumber(oldest[1] or '0'), tonumber(oldest[2] or '0')
  end
  local at_requests, at_tokens = tonumber(stored[4] or '0'), tonumber(stored[5] or '0')
  if lo >= lo_now then
    return requests, tokens, lo, bucket, at_requests, at_tokens  -- 'lo' moved (and the TTL was set) this second
  end
  if lo_now - lo >= span then
    redis.call('DEL', key)
    return 0, 0, nil, bucket, 0, 0
  end
  local fields = {}
  for i = lo, lo_now - 1 do
    fields[#fields + 1] = 'r' .. i
    fields[#fields + 1] = 't' .. i
  end
  local old = redis.call('HMGET', key, unpack(fields))
  for j = 1, #old, 2 do
    requests = requests - tonumber(old[j] or '0')
    tokens = tokens - tonumber(old[j + 1] or '0')
  end
  redis.call('HDEL', key, unpack(fields))
  redis.call('HSET', key, 'lo', lo_now, 'r', requests, 't', tokens)
  redis.call('EXPIRE', key, ttl)
  return requests, tokens, lo_now, bucket, at_requests, at_tokens
end

-- Give back `amount` of one counter ('r' or 't'), taking it off the oldest buckets first: the sum is exact at once and
-- afterwards the window can only count more than happened, never less.
local function window_take(key, lo, at, which, amount)
  local fields = {}
  for i = lo, at do
    fields[#fields + 1] = which .. i
  end
  local counts = redis.call('HMGET', key, unpack(fields))
  local left = amount
  for j = 1, #counts do
    if left <= 0 then
      break
    end
    local taken = math.min(left, tonumber(counts[j] or '0'))
    if taken > 0 then
      redis.call('HINCRBY', key, fields[j], -taken)
      left = left - taken
    end
  end
  if amount - left > 0 then
    redis.call('HINCRBY', key, which, left - amount)
  end
end

-- Count `d_requests` and `d_tokens` more (negative: give them back) in a window, with what window_load returned.
local function window_add(key, span, ttl, requests, tokens, lo, at, at_requests, at_tokens, d_requests, d_tokens)
  if lo == nil then
    if d_requests <= 0 and d_tokens <= 0 then
      return
    end
    lo = at - span + 1
    redis.call('HSET', key, 'lo', lo)
    redis.call('EXPIRE', key, ttl)
  end
  if d_requests > 0 and d_tokens > 0 then
    redis.call('HSET', key, 'r', requests + d_requests, 't', tokens + d_tokens,
      'r' .. at, at_requests + d_requests, 't' .. at, at_tokens + d_tokens)
    return
  end
  if d_requests > 0 then
    redis.call('HSET', key, 'r', requests + d_requests, 'r' .. at, at_requests + d_requests)
  elseif d_requests < 0 then
    window_take(key, lo, at, 'r', -d_requests)
  end
  if d_tokens > 0 then
    redis.call('HSET', key, 't', tokens + d_tokens, 't' .. at, at_tokens + d_tokens)
  elseif d_tokens < 0 then
    window_take(key, lo, at, 't', -d_tokens)
  end
end

-- The first bucket from which `excess_requests` and `excess_tokens` (over the limits) have left the window.
local function window_passes_at(key, bucket, span, lo, excess_requests, excess_tokens)
  if lo ~= nil and lo <= bucket then
    local fields = {}
    for i = lo, bucket do
      fields[#fields + 1] = 'r' .. i
      fields[#fields + 1] = 't' .. i
    end
    local counts = redis.call('HMGET', key, unpack(fields))
    for j = 1, #counts, 2 do
      excess_requests = excess_requests - tonumber(counts[j] or '0')
      excess_tokens = excess_tokens - tonumber(counts[j + 1] or '0')
      if excess_requests <= 0 and excess_tokens <= 0 then
        return lo + (j - 1) / 2 + span
      end
    end
  end
  return bucket + span  -- more than a whole window holds: as long as the window
end

-- How much must leave a window before `wanted` more fit under `limit` (-1 = none; <= 0: it fits now).
local function excess(limit, used, wanted)
  if limit < 0 then
    return 0
  end
  return used + wanted - limit
end
