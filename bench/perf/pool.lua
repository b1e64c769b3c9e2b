-- wrk script for bench/perf: walks a pool written by gen_pool.py, each request used
-- once, in order, with the real sender's headers in its order. Counts every status
-- and checks each answer: with mode "json" the body must hold {"reply":"Echo: ...},
-- with "sse" it must end the stream with a done event, with "any" only the status
-- counts. Prints one "RESULT {json}" line at the end for run_matrix.py.
--
--   wrk -t1 -c16 -d6s -s pool.lua http://127.0.0.1:PORT -- POOL_FILE MODE
--
-- When the pool runs out, the thread stops (the run ends early, which wrk's duration
-- and req/s then reflect) and "exhausted" is reported.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Where each entry's fields start in `entries` (X-Timestamp, X-Signature, message id,
-- payload timestamp), and where it ends.
local xts, sig, mid, pts, ends = {}, {}, {}, {}, {}
local entries
local n, idx = 0, 0
local head, before, middle, after
local filler
mode = "any"
non2xx, badbody, exhausted, loaded = 0, 0, 0, 0, 0
counts = {}

function init(args)
  local path = args[1]
  mode = args[2] or "any"
  local f = assert(io.open(path, "rb"))
  local host, app, thread_id, target = f:read("*l"):match("^(%S+) (%S+) (%S+) (%S+)$")
  head = "POST " .. target .. " HTTP/1.1\r\nHost: " .. host ..
    "\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive" ..
    "\r\nUser-Agent: python-httpx/0.28.1\r\nContent-Type: application/json" ..
    "\r\nX-App-Id: " .. app .. "\r\nX-Thread-Id: " .. thread_id .. "\r\nX-Timestamp: "
  before = f:read("*l")
  middle = f:read("*l")
  after = f:read("*l")
  -- The entries stay in the file's text, one string, found by offsets (numbers, which
  -- the collector does not sweep): a table of four strings an entry made every cycle of
  -- the Lua collector sweep millions of objects, stalling the client for milliseconds
  -- while the server sat idle.
  entries = f:read("*a")
  f:close()
  local at = 1
  while at <= #entries do
    local eol = entries:find("\n", at, true) or (#entries + 1)
    local s1 = entries:find(" ", at, true)
    local s2 = s1 and entries:find(" ", s1 + 1, true)
    local s3 = s2 and entries:find(" ", s2 + 1, true)
    -- gen_pool.py writes four fields a line; anything else stops the run loudly.
    local s4 = s3 and entries:find(" ", s3 + 1, true)
    assert(s3 and s3 < eol and (not s4 or s4 > eol), "malformed pool line at byte " .. at)
    n = n + 1
    xts[n], sig[n], mid[n], pts[n], ends[n] = at, s1 + 1, s2 + 1, s3 + 1, eol
    at = eol + 1
  end
  loaded = n
  filler = "GET /healthz HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"
end

function request()
  idx = idx + 1
  if idx > n then
    exhausted = exhausted + 1
    if exhausted == 1 then wrk.thread:stop() end
    return filler
  end
  -- The fields are cut from the pool's one string (four short strings) and the request
  -- is made in one concatenation: a single large string of garbage per request.
  local sub = string.sub
  local m = sub(entries, mid[idx], pts[idx] - 2)
  local p = sub(entries, pts[idx], ends[idx] - 1)
  local length = #before + #m + #middle + #p + #after
  return head .. sub(entries, xts[idx], sig[idx] - 2) .. "\r\nX-Signature: " ..
    sub(entries, sig[idx], mid[idx] - 2) .. "\r\nContent-Length: " .. length .. "\r\n\r\n" ..
    before .. m .. middle .. p .. after
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif exhausted == 0 then
    if mode == "json" then
      if not body:find('"reply":"Echo: ', 1, true) then badbody = badbody + 1 end
    elseif mode == "sse" then
      if not body:find("event: done\ndata: ", 1, true) then badbody = badbody + 1 end
    end
  end
end

function done(summary, latency, requests)
  local non, bad, exh, sent, pool = 0, 0, 0, 0, 0
  local seen = {}
  for _, t in ipairs(threads) do
    non = non + t:get("non2xx")
    bad = bad + t:get("badbody")
    exh = exh + t:get("exhausted")
    pool = pool + t:get("loaded")
    for code, count in pairs(t:get("counts")) do
      seen[#seen + 1] = code .. "=" .. count
    end
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"non2xx":%d,"bad_body":%d,"exhausted":%d,"pool":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"statuses":"%s"}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, non, bad, exh, pool,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(seen, ",")))
end
