-- POST of new keys, never seen before: key names carry the run tag (BENCH_TAG), the wrk
-- thread and a counter, and go round-robin over the clusters in BENCH_PINS (one PIN a line),
-- so that no cluster reaches the service's key limit.
local pins = {}
local tag = os.getenv("BENCH_TAG") or "0"
local counter = 0

function init(args)
  for line in io.lines(os.getenv("BENCH_PINS")) do
    if line ~= "" then pins[#pins + 1] = line end
  end
end

function request()
  counter = counter + 1
  local pin = pins[(counter % #pins) + 1]
  local body = string.format('{"key":"r%st%dk%d","value":"10.0.%d.%d"}',
    tag, id, counter, counter % 250, id)
  return wrk.format("POST", "/api/v1/clusters/" .. pin .. "/keys",
    { ["Content-Type"] = "application/json" }, body)
end

local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

dofile("report.lua")
