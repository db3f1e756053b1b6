-- GET of the URL given to wrk; BENCH_ACCEPT, if set, becomes the Accept header (text is the
-- default rendering, application/json the other).
local accept = os.getenv("BENCH_ACCEPT")
if accept and accept ~= "" then
  wrk.headers["Accept"] = accept
end
dofile("report.lua")
