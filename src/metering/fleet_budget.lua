-- One replica's report on one tenant's budget for one period, applied atomically: its spend
-- since the last report, the part of it no grant covered, the grant it gives back, and the
-- slice it asks for. Idempotent by report id: a report seen before changes nothing and gets
-- the answer it got the first time.
--
-- KEYS[1]  the budget: a hash of spent, claimed (spent + grants outstanding) and fired (the
--          highest threshold alerted), one key per tenant and period, so a new period starts
--          from nothing by construction
-- KEYS[2]  the report's marker (same hash slot)
-- ARGV     limit, used, over, returned, want, fired_local, seed ('' for none), expire_at_ms,
--          marker_ttl_ms
local function fmt(x) return string.format('%.17g', x) end
local limit = tonumber(ARGV[1])
local function level(spent)
  local reached = 0
  for _, t in ipairs({50, 80, 100}) do
    if (limit > 0 and spent * 100 >= t * limit) or (limit <= 0 and spent > 0) then reached = t end
  end
  return reached
end

local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local claimed = tonumber(redis.call('HGET', KEYS[1], 'claimed') or '0')
local replay = redis.call('GET', KEYS[2])
if replay then
  return {fmt(spent), fmt(claimed), replay}
end
local fired = tonumber(redis.call('HGET', KEYS[1], 'fired') or '0')
if redis.call('EXISTS', KEYS[1]) == 0 and ARGV[7] ~= '' then
  -- The fleet has no spend for this period: take the ledger's, whose thresholds were
  -- alerted before.
  spent = tonumber(ARGV[7])
  claimed = spent
  fired = level(spent)
end
local fired_local = tonumber(ARGV[6])
if fired_local > fired then fired = fired_local end
local fired_before = fired

spent = spent + tonumber(ARGV[2])
claimed = claimed + tonumber(ARGV[3]) - tonumber(ARGV[4])
if claimed < spent then claimed = spent end
local want = tonumber(ARGV[5])
local grant = 0
if want > 0 and limit - claimed > 0 then grant = math.min(want, limit - claimed) end
claimed = claimed + grant
local reached = level(spent)
if reached > fired then fired = reached end

redis.call('HSET', KEYS[1], 'spent', fmt(spent), 'claimed', fmt(claimed), 'fired', fired)
redis.call('PEXPIREAT', KEYS[1], ARGV[8])
local answer = fmt(grant) .. ' ' .. fired_before .. ' ' .. fired
redis.call('SET', KEYS[2], answer, 'PX', ARGV[9])
return {fmt(spent), fmt(claimed), answer}
