-- POST /api/v1/clusters (no body): a new PIN and admin token per request.
wrk.method = "POST"
dofile("report.lua")
