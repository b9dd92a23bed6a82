-- wrk script for bench/storefront.py: POST /api/v1/storefront/prices for 20 items.
--
--   wrk -t2 -c16 -d10s --latency -s bench/storefront.lua URL -- MODE CUSTOMER TOKEN ITEMS RUN
--
-- MODE warm: every request asks the same 20 items at quantity 1 (after one priming request,
-- all cache hits). MODE cold: every request asks its 20 items at a quantity no request asked
-- before (thread id and a counter), so every line is a cache miss and costs M3 a bulk call.
-- done() prints one JSON line, "M3BNG-WRK {...}", that bench/storefront.py reads.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

local mode, customer, token, items, run
local counter = 0
statuses = {}

function init(args)
   mode, customer, token, run = args[1], args[2], args[3], tonumber(args[5] or "0")
   items = {}
   for item in string.gmatch(args[4], "[^,]+") do
      table.insert(items, item)
   end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. token
end

local function body(quantity)
   local lines = {}
   for _, item in ipairs(items) do
      table.insert(lines, string.format('{"item": "%s", "quantity": %s}', item, quantity))
   end
   return string.format('{"customer": "%s", "items": [%s]}', customer, table.concat(lines, ", "))
end

local warm_body = nil

function request()
   if mode == "warm" then
      warm_body = warm_body or body("1")
      return wrk.format(nil, nil, nil, warm_body)
   end
   counter = counter + 1
   -- 1000.000001, 1000.000002, …: a quantity no request asked before (the cache key normalises
   -- 1.10 to 1.1, so the counter is zero-padded to six decimals)
   return wrk.format(nil, nil, nil, body(string.format("%d.%06d", 1000 + 10 * run + id, counter)))
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local by_status = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         by_status[status] = (by_status[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(by_status) do
      table.insert(parts, string.format('"%d": %d', status, n))
   end
   local e = summary.errors
   io.write(string.format(
      'M3BNG-WRK {"duration_us": %d, "responses": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, '
         .. '"statuses": {%s}}\n',
      summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, table.concat(parts, ", ")
   ))
end
