-- Replay a list of URL paths: each wrk thread takes every n-th line (n = thread count).
-- args: <file> <prefix> <once|loop> <threads>
-- "once" stops a thread when its share has been answered (cold: each tile asked for once);
-- "loop" cycles until the duration ends (warm). done() prints one JSON line for the bench.

local counter = 1
local threads = {}

-- wrk's main thread sleeps for the whole duration even when every thread has stopped, so a
-- "once" run measures its own elapsed time (LuaJIT ffi: clock_gettime(CLOCK_MONOTONIC)).
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local function now_us()
  local ts = ffi.new("bench_timespec")
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, prefix, nthreads = args[1], args[2], tonumber(args[4])
  once = args[3] == "once"
  paths = {}
  local index = 0
  for line in io.lines(file) do
    if index % nthreads == id then
      table.insert(paths, prefix .. line)
    end
    index = index + 1
  end
  answered = 0
  started_us = nil
  finished_us = -1
end

function request()
  if started_us == nil then
    started_us = now_us()
  end
  local path = paths[counter]
  counter = counter + 1
  if counter > #paths then
    counter = 1
  end
  return wrk.format("GET", path)
end

function response(status, headers, body)
  answered = answered + 1
  if once and answered == #paths then
    finished_us = now_us() - started_us
    wrk.thread:set("finished_us", finished_us)
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local duration = 0
  for _, thread in ipairs(threads) do
    local finished = thread:get("finished_us")
    if finished == nil or finished < 0 then
      duration = summary.duration
      break
    end
    duration = math.max(duration, finished)
  end
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": %d, "status_errors": %d, "bytes": %d}\n',
    summary.requests, duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, summary.bytes))
end
