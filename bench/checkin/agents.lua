-- wrk script for bench/checkin: each request is one of 10,000 simulated agents
-- (round robin from a different offset per thread). MODE: 200 (assignments,
-- no validator), 304 (assignments with the agent's ETag), events (a batch of 5
-- status events with ids unique per run). AGENTS: a file of "secret etag" lines.
local mode = os.getenv("MODE") or "200"
local run = os.getenv("RUN") or tostring(os.time())
local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

function init(args)
  agents = {}
  for line in io.lines(os.getenv("AGENTS")) do
    local s, e, u = line:match("^(%S+) (%S+) (%S+)$")
    agents[#agents + 1] = { s, e, u }
  end
  i = (tid * 4999) % #agents
  n = 0
end

function request()
  i = i % #agents + 1
  local a = agents[i]
  if mode == "events" then
    n = n + 1
    local evs = {}
    local types = { "download-started", "download-completed", "install-started", "install-failed", "download-started" }
    for k = 1, 5 do
      evs[k] = string.format('{"id":"%s-%d-%d-%d","updateId":"%s","type":"%s","attempt":1,"at":"2026-11-22T06:00:00.000Z","exitCode":1603,"message":"bench"}', run, tid, n, k, a[3], types[k])
    end
    local body = '{"events":[' .. table.concat(evs, ",") .. ']}'
    return wrk.format("POST", "/agent/v1/events", { ["authorization"] = "Bearer " .. a[1], ["content-type"] = "application/json" }, body)
  elseif mode == "304" then
    return wrk.format("GET", "/agent/v1/assignments", { ["authorization"] = "Bearer " .. a[1], ["if-none-match"] = a[2] })
  else
    return wrk.format("GET", "/agent/v1/assignments", { ["authorization"] = "Bearer " .. a[1] })
  end
end

function done(summary, latency, requests)
  io.write(string.format('RESULT {"requests":%d,"durationUs":%d,"p50Ms":%.3f,"p99Ms":%.3f,"maxMs":%.3f,"errStatus":%d,"errConnect":%d,"errTimeout":%d,"errRead":%d}\n',
    summary.requests, summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status, summary.errors.connect, summary.errors.timeout, summary.errors.read))
end
