-- wrk script: unique signed GitHub deliveries.
-- The body is signed once (X-Hub-Signature-256 covers only the body); every request carries
-- a fresh X-GitHub-Delivery, so every request is a new delivery the server must record.
-- Arguments after `--`: <body file> <signature> <delivery prefix> <event name>
-- done() prints one line `BENCH_RESULT {json}` that bench/load.py reads.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  body = f:read("*a")
  f:close()
  signature = args[2]
  prefix = args[3] .. "-t" .. tid .. "-"
  event = args[4] or "deployment_status"
  counter = 0
  accepted = 0
  other = 0
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "GitHub-Hookshot/bench",
    ["X-GitHub-Event"] = event,
    ["X-GitHub-Delivery"] = prefix .. counter,
    ["X-Hub-Signature-256"] = signature,
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
