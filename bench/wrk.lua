-- Replay a list of URL paths: each wrk thread takes every n-th line (n = thread count).
-- args: <file> <prefix> <once|loop> <threads>
-- "once" stops a thread when its share has been answered (cold: each tile asked for once);
-- "loop" cycles until the duration ends (warm). done() prints one JSON line for the bench.

local counter = 1
local threads = {}

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
end

function request()
  local path = paths[counter]
  counter = counter + 1
  if counter > #paths then
    counter = 1
  end
  return wrk.format("GET", path)
end

function response(status, headers, body)
  answered = answered + 1
  if once and answered >= #paths then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": %d, "status_errors": %d, "bytes": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, summary.bytes))
end
