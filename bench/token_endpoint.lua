-- wrk script for bench/token_endpoint.py: POSTs client-credentials requests to the token
-- endpoint over one keep-alive HTTPS connection per wrk connection.
--
--   wrk ... -s bench/token_endpoint.lua <url> -- static <body-file>
--       every request sends the same form body (the client secret scenario)
--   wrk ... -s bench/token_endpoint.lua <url> -- assertions <prefix>
--       <prefix>.head holds the form body up to "client_assertion="; thread i reads its own
--       slice <prefix>.<i>, one certificate assertion a line, and sends each exactly once
--       (the server refuses a replayed jti). A thread that runs out counts `exhausted` and
--       sends an empty assertion, which fails visibly as a non-2xx: the run is then invalid.
--
-- done() prints one line "KEYLESS_BENCH_JSON {...}" with the counts and latency percentiles
-- (microseconds) that token_endpoint.py parses. A response of status 400 or more counts as an
-- error (wrk's own count); the endpoint answers 200 with a token or an error status.
--
-- The script keeps wrk's per-request work to a minimum, so that the load generator leaves the
-- CPU to the server it shares the machine with: no response() callback (wrk then does not copy
-- headers and bodies into Lua), and in static mode no request() either (wrk sends one prebuilt
-- request). Both are removed in init(), before wrk looks for them.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

-- Per-thread state. Counters are globals so that done() can read them with thread:get().
exhausted = 0

local mode
local head
local assertions = {}
local used = 0
local form_headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local function read_all(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

function init(args)
   response = nil
   mode = args[1]
   if mode == "static" then
      wrk.method = "POST"
      wrk.body = read_all(args[2])
      wrk.headers["Content-Type"] = form_headers["Content-Type"]
      request = nil
   elseif mode == "assertions" then
      head = read_all(args[2] .. ".head")
      for line in io.lines(args[2] .. "." .. id) do
         if #line > 0 then
            assertions[#assertions + 1] = line
         end
      end
   else
      error("mode must be static or assertions, got " .. tostring(mode))
   end
end

function request()
   used = used + 1
   local assertion = assertions[used]
   if assertion == nil then
      exhausted = exhausted + 1
      assertion = ""
   end
   return wrk.format("POST", nil, form_headers, head .. assertion)
end

function done(summary, latency, requests)
   local t_exhausted = 0
   for _, thread in ipairs(threads) do
      t_exhausted = t_exhausted + thread:get("exhausted")
   end
   local e = summary.errors
   local parts = {
      string.format('"duration_us":%d', summary.duration),
      string.format('"requests":%d', summary.requests),
      string.format('"bytes":%d', summary.bytes),
      string.format('"ok_200":%d', summary.requests - e.status),
      string.format('"non_2xx":%d', e.status),
      string.format('"other_2xx":%d', 0),
      string.format('"exhausted":%d', t_exhausted),
      string.format('"status_errors":%d', e.status),
      string.format(
         '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}',
         e.connect, e.read, e.write, e.timeout
      ),
      string.format(
         '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}',
         latency.min, latency.mean, latency.stdev, latency.max,
         latency:percentile(50), latency:percentile(90), latency:percentile(99),
         latency:percentile(99.9)
      ),
      '"first_error":""',
   }
   io.write("KEYLESS_BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end
