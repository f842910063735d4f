-- wrk script for bench/access_decisions.py: management API requests with a bearer token,
-- over one keep-alive HTTPS connection per wrk connection.
--
--   wrk ... -s bench/access_api.lua <url> -- <token-file> GET
--   wrk ... -s bench/access_api.lua <url> -- <token-file> PUT <body-file>
--       every request sends the same body (an idempotent PUT)
--   wrk ... -s bench/access_api.lua <url> -- <token-file> PUT-COUNTER <body-prefix-file>
--       the body is <prefix><n>"}} with n counting per thread, so every PUT really changes
--       the stored tags (the prefix ends inside a JSON string)
--
-- The token is read from a file, never from the command line (where `ps` would show it).
-- done() prints one line "KEYLESS_BENCH_JSON {...}" with the counts and latency percentiles
-- (microseconds) that access_decisions.py parses. Only 200 and 201 count as success.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

ok = 0
non2xx = 0
first_error = ""

local method
local headers
local static_request
local prefix
local counter = 0

local function read_all(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

function init(args)
   local token = string.gsub(read_all(args[1]), "%s+$", "")
   method = args[2]
   headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
   if method == "GET" then
      static_request = wrk.format("GET", nil, headers, nil)
   elseif method == "PUT" then
      static_request = wrk.format("PUT", nil, headers, read_all(args[3]))
   elseif method == "PUT-COUNTER" then
      prefix = read_all(args[3])
   else
      error("method must be GET, PUT or PUT-COUNTER, got " .. tostring(method))
   end
end

function request()
   if static_request ~= nil then
      return static_request
   end
   counter = counter + 1
   return wrk.format("PUT", nil, headers, prefix .. id .. "-" .. counter .. '"}}')
end

function response(status, hdrs, body)
   if status == 200 or status == 201 then
      ok = ok + 1
   else
      non2xx = non2xx + 1
      if first_error == "" then
         first_error = tostring(status) .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

local function json_string(s)
   s = string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local t_ok, t_non2xx, t_error = 0, 0, ""
   for _, thread in ipairs(threads) do
      t_ok = t_ok + thread:get("ok")
      t_non2xx = t_non2xx + thread:get("non2xx")
      local e = thread:get("first_error")
      if t_error == "" and e ~= nil then
         t_error = e
      end
   end
   local e = summary.errors
   local parts = {
      string.format('"duration_us":%d', summary.duration),
      string.format('"requests":%d', summary.requests),
      string.format('"ok":%d', t_ok),
      string.format('"non_2xx":%d', t_non2xx),
      string.format(
         '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}',
         e.connect, e.read, e.write, e.timeout
      ),
      string.format(
         '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}',
         latency.min, latency.mean, latency.max,
         latency:percentile(50), latency:percentile(90), latency:percentile(99),
         latency:percentile(99.9)
      ),
      '"first_error":' .. json_string(t_error),
   }
   io.write("KEYLESS_BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end
