-- wrk script: Alertmanager webhooks, each with one firing alert of its own.
-- The body is a template in which every `@ID@` becomes a per-request id (alert name,
-- fingerprint, group key), so every request is a new delivery and a new incident: nothing is
-- a duplicate and no two events wait on one incident's lock.
-- Arguments after `--`: <body template file> <bearer token> <id prefix>
-- done() prints one line `BENCH_RESULT {json}` that bench/load.py reads.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  template = f:read("*a")
  f:close()
  auth = "Bearer " .. args[2]
  prefix = args[3] .. "t" .. tid .. "x"
  counter = 0
  accepted = 0
  other = 0
end

function request()
  counter = counter + 1
  local id = prefix .. counter
  local body = template:gsub("@ID@", id)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "Alertmanager/0.27.0",
    ["Authorization"] = auth,
  }, body)
end

function response(status, headers, resp_body)
  if status == 202 then
    accepted = accepted + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local acc, oth = 0, 0
  for _, t in ipairs(threads) do
    acc = acc + t:get("accepted")
    oth = oth + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_s": %.6f, "accepted": %d, "other_status": %d, '
    .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
    .. '"latency_ms": {"p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f, "mean": %.3f}}\n',
    summary.requests, summary.duration / 1e6, acc, oth,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3))
end
