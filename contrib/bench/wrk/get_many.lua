-- GET of one key (BENCH_KEY, default master_ip) of a cluster picked at random from the PINs
-- in BENCH_PINS (one a line), so the load spreads over the whole store.
local pins = {}
local key = os.getenv("BENCH_KEY") or "master_ip"
local suffix = os.getenv("BENCH_SUFFIX") or ""

function init(args)
  for line in io.lines(os.getenv("BENCH_PINS")) do
    if line ~= "" then pins[#pins + 1] = line end
  end
  math.randomseed(os.time() + (id or 0))
end

function request()
  local pin = pins[math.random(#pins)]
  local path = "/api/v1/clusters/" .. pin .. "/keys"
  if key ~= "" then path = path .. "/" .. key end
  return wrk.format("GET", path .. suffix)
end

local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

dofile("report.lua")
