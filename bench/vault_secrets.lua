-- wrk script for bench/vault_secrets.py: GETs one URL over keep-alive HTTPS connections to the
-- server's loopback address, naming a vault in the Host header.
--
--   wrk ... -s bench/vault_secrets.lua https://127.0.0.1:PORT/secrets/NAME?api-version=7.5 \
--       -- <host header> <expected status> <token|none>
--
-- With `token`, every request carries `Authorization: Bearer $KEYLESS_BENCH_TOKEN`: the token
-- is read from wrk's environment, so it is never on a command line. The server does not need
-- SNI (it has one certificate, which covers `*.vault.{host}`); wrk sends the URL's address.
--
-- Every response whose status is not the expected one is counted (`unexpected`, with the
-- first such status): a benchmark of reads counts 200s only.
--
-- done() prints one line "KEYLESS_BENCH_JSON {...}" with the counts and latency percentiles
-- (microseconds) that vault_secrets.py parses.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

-- Per-thread state. Counters are globals so that done() can read them with thread:get().
unexpected = 0
first_status = 0

local expected

function init(args)
   wrk.headers["Host"] = args[1]
   expected = tonumber(args[2])
   if args[3] == "token" then
      local token = os.getenv("KEYLESS_BENCH_TOKEN")
      if token == nil or token == "" then
         error("KEYLESS_BENCH_TOKEN is not set")
      end
      wrk.headers["Authorization"] = "Bearer " .. token
   end
   request = nil -- one prebuilt request, the same every time
end

function response(status, headers, body)
   if status ~= expected then
      unexpected = unexpected + 1
      if first_status == 0 then
         first_status = status
      end
   end
end

function done(summary, latency, requests)
   local t_unexpected, t_first = 0, 0
   for _, thread in ipairs(threads) do
      t_unexpected = t_unexpected + thread:get("unexpected")
      if t_first == 0 then
         t_first = thread:get("first_status")
      end
   end
   local e = summary.errors
   local parts = {
      string.format('"duration_us":%d', summary.duration),
      string.format('"requests":%d', summary.requests),
      string.format('"bytes":%d', summary.bytes),
      string.format('"unexpected_status":%d', t_unexpected),
      string.format('"first_unexpected_status":%d', t_first),
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
   }
   io.write("KEYLESS_BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end
