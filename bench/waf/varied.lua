-- bench/waf/varied.lua: a wrk script whose requests differ the way real API traffic does, for
-- bench/waf/side_by_side.sh's second throughput pass (`throughput.sh -s bench/waf/varied.lua`).
--
-- Every request is GET /api/users with three query values that change on every request (an
-- id, a search word with a number, a sort key), so that no query value repeats and none is
-- all digits but the id; and one of 24 browser User-Agents in turn, as 24 clients would send.
-- The other headers (Host, Accept, Accept-Language, Accept-Encoding, X-API-Key) are those
-- throughput.sh passes with -H. This is the traffic the WAF's per-thread memo helps least
-- with: only the header values, the path and the parameter names repeat.

local words = {
  "shipped", "pending", "created", "name", "price", "blue", "green", "north", "delta",
  "omega", "paper", "stone", "river", "maple", "cedar", "amber", "coral", "ivory",
}
local versions = {
  "120.0.6099.109", "121.0.6167.85", "122.0.6261.94", "123.0.6312.58", "124.0.6367.91",
  "125.0.6422.60", "126.0.6478.61", "127.0.6533.72",
}
local systems = {
  "Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7", "X11; Linux x86_64",
}
local header_sets = {}
local counter = 0

function init(args)
  -- Different sequences in each wrk thread.
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  for _, system in ipairs(systems) do
    for _, version in ipairs(versions) do
      local headers = {}
      for k, v in pairs(wrk.headers) do headers[k] = v end
      headers["User-Agent"] = "Mozilla/5.0 (" .. system .. ") AppleWebKit/537.36 (KHTML, like Gecko) Chrome/"
        .. version .. " Safari/537.36"
      header_sets[#header_sets + 1] = headers
    end
  end
end

function request()
  counter = counter + 1
  local id = math.random(1, 100000000)
  local path = string.format("/api/users?id=%d&q=%s%d&sort=%s", id, words[math.random(#words)],
    math.random(1, 9999), words[math.random(#words)])
  return wrk.format("GET", path, header_sets[(counter % #header_sets) + 1])
end
