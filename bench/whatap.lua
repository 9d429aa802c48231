-- wrk script: a realistic WhaTap webhook mix for `make bench`.
--
--   wrk -t2 -c32 -d20s --latency -s bench/whatap.lua URL -- NONCE [FINGERPRINTS] [RECOVERY_PCT]
--
-- * FINGERPRINTS (default 1000) distinct alerts: 100 agents (oid) x 10 metrics
--   (metricName + title), picked uniformly, so after the first second most requests
--   are repeats of an incident that is already open.
-- * RECOVERY_PCT (default 5) percent of requests are recoveries (status "off").
-- * Every request carries a distinct uuid: "<NONCE>-t<thread>-<n>", so none is an
--   idempotent duplicate (NONCE differs per wrk run; the thread id comes from setup()).
-- * Every response status is counted per thread (response()), and done() prints one
--   line "BENCH_JSON {...}" with requests, duration, errors, status counts and latency
--   percentiles (microseconds) for bench/bench.py to parse.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local METRICS = {
  {"cpu", "CPU usage high", "%"},
  {"memory", "Memory usage high", "%"},
  {"disk", "Disk usage high", "%"},
  {"heap_used", "Heap usage high", "MB"},
  {"gc_time", "GC time too long", "ms"},
  {"active_tx", "Too many active transactions", ""},
  {"tps", "TPS dropped", ""},
  {"resp_time", "Response time slow", "ms"},
  {"error_rate", "Error rate high", "%"},
  {"thread_count", "Thread count high", ""},
}
local LEVELS = {"Critical", "Warning", "Warning", "Error", "Critical"}

function init(args)
  nonce = args[1] or tostring(os.time())
  fingerprints = tonumber(args[2] or "1000")
  recovery_pct = tonumber(args[3] or "5")
  seq = 0
  statuses = {}
  math.randomseed(os.time() * 1000 + tid * 7919)
  headers = {["Content-Type"] = "application/json", ["User-Agent"] = "WhaTap-Webhook"}
end

function request()
  seq = seq + 1
  local idx = math.random(0, fingerprints - 1)
  local m = METRICS[(idx % #METRICS) + 1]
  local agent = math.floor(idx / #METRICS)
  local oid = 1000000 + agent
  local recovered = math.random() * 100 < recovery_pct
  local status, message, level
  local value = string.format("%.2f", 80 + math.random() * 19.99)
  if recovered then
    status = "off"
    level = "Info"
    message = string.format("RECOVERED: %s on was-%03d (%s%s)", m[2], agent, value, m[3])
  else
    status = "on"
    level = LEVELS[(idx % #LEVELS) + 1]
    message = string.format("%s on was-%03d: %s%s > 80%s", m[2], agent, value, m[3], m[3])
  end
  local body = string.format(
    '{"pcode":%d,"projectName":"bench-project","uuid":"%s-t%d-%d","time":%d,' ..
    '"oid":%d,"oname":"was-%03d","title":"%s","message":"%s","level":"%s","status":"%s",' ..
    '"metricName":"%s","metricValue":"%s","metricThreshold":"80"}',
    31337, nonce, tid, seq, os.time() * 1000 + math.random(0, 999),
    oid, agent, m[2], message, level, status, m[1], value)
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for k, v in pairs(s) do counts[k] = (counts[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%s":%d', tostring(k), v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d},' ..
    '"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency:percentile(99.9),
    table.concat(parts, ",")))
end
