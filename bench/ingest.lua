-- wrk script for bench/ingest.py: sends pre-signed webhook requests, each one once.
--
--   wrk -t2 -c64 -d15s --latency -s bench/ingest.lua http://127.0.0.1:PORT/webhooks/bng -- PREFIX
--
-- bench/ingest.py writes one file per wrk thread, PREFIX.0, PREFIX.1, ...: complete HTTP/1.1
-- requests (Standard Webhooks signature, a new webhook-id each), every one preceded by a line with
-- its length in bytes. Thread i sends the requests of PREFIX.i in order, so no id is sent twice
-- unless the file runs out; then it starts over and counts the wrap, and the server's answers to
-- the repeats (200 "duplicate" from m3bng) show up as failures. done() prints one JSON line,
-- "M3BNG-WRK {...}", that bench/ingest.py reads: wrk's counts, latency percentiles (µs), every
-- status seen and how many requests were handed to wrk.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

local requests = {}
local count = 0
local next_index = 1
sent = 0
wrapped = 0
statuses = {}

function init(args)
   local path = args[1] .. "." .. id
   local file = assert(io.open(path, "rb"))
   while true do
      local line = file:read("*l")
      if line == nil then
         break
      end
      local size = assert(tonumber(line), "bad length line in " .. path)
      count = count + 1
      requests[count] = assert(file:read(size), "short request in " .. path)
   end
   file:close()
   assert(count > 0, "no requests in " .. path)
end

function request()
   if next_index > count then
      next_index = 1
      wrapped = wrapped + 1
   end
   local raw = requests[next_index]
   next_index = next_index + 1
   sent = sent + 1
   return raw
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local total_sent, total_wrapped, loaded = 0, 0, 0
   local by_status = {}
   for _, thread in ipairs(threads) do
      total_sent = total_sent + thread:get("sent")
      total_wrapped = total_wrapped + thread:get("wrapped")
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
      'M3BNG-WRK {"duration_us": %d, "responses": %d, "bytes": %d, "sent": %d, "wrapped": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, '
         .. '"statuses": {%s}}\n',
      summary.duration, summary.requests, summary.bytes, total_sent, total_wrapped,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, table.concat(parts, ", ")
   ))
end
