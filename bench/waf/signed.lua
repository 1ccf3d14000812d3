-- bench/waf/signed.lua: a wrk script that signs every request the way a client of a gateway
-- route with `auth = "signature"` must (docs/edge.md, "HMAC signatures"), for
-- bench/waf/side_by_side.sh's signed throughput pass (`throughput.sh -s bench/waf/signed.lua`).
--
-- Every request is GET /api/users?id=<n>&nonce=<thread>.<start>.<counter>: a nonce in the
-- query makes every canonical request, and so every signature, new (the gateway accepts a
-- signature once).
-- X-Timestamp is the current Unix time, X-Signature `keyId=<id>,signature=<hex HMAC-SHA256>` over
--   GET \n /api/users \n id=<n>&nonce=<…> \n <timestamp> \n <SHA-256 of the empty body>
-- The HMAC is OpenSSL's, called through LuaJIT's FFI from the libcrypto wrk is linked with, so
-- the signing costs the client about a microsecond. Targets that do not check signatures (nginx,
-- a gateway with API keys) get the same requests, so the client's cost is the same for all.
--
-- Environment: SIGNED_KEY_ID (the key id), SIGNED_SECRET (its secret). The other headers (Host,
-- User-Agent, Accept…, X-API-Key) are those throughput.sh passes with -H.

local ffi = require("ffi")
ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
]]
local crypto = ffi.C
local ok = pcall(function() return crypto.EVP_sha256 end)
if not ok then
  crypto = ffi.load("crypto")
end

local EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
local key_id = os.getenv("SIGNED_KEY_ID") or error("signed.lua: SIGNED_KEY_ID is not set")
local secret = os.getenv("SIGNED_SECRET") or error("signed.lua: SIGNED_SECRET is not set")

local hex = {}
for b = 0, 255 do
  hex[b] = string.format("%02x", b)
end

local md = ffi.new("unsigned char[32]")
local md_len = ffi.new("unsigned int[1]")
local sha256 = crypto.EVP_sha256()
local digits = {}

local function hmac_hex(message)
  crypto.HMAC(sha256, secret, #secret, message, #message, md, md_len)
  for i = 0, 31 do
    digits[i + 1] = hex[md[i]]
  end
  return table.concat(digits)
end

local headers = {}
local nonce_prefix = ""
local counter = 0
local threads = 0

function setup(thread)
  -- Runs in the main Lua state, once per wrk thread: a global in each thread's own state.
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  for k, v in pairs(wrk.headers) do
    headers[k] = v
  end
  -- The thread's number tells its requests apart from the other threads', the start time from
  -- an earlier run's (within the gateway's 5-minute window).
  nonce_prefix = string.format("%d.%x.%x", thread_number or 0, os.time(), math.floor(os.clock() * 1e6))
end

function request()
  counter = counter + 1
  local query = string.format("id=%d&nonce=%s.%d", counter % 100000, nonce_prefix, counter)
  local ts = tostring(os.time())
  local canonical = "GET\n/api/users\n" .. query .. "\n" .. ts .. "\n" .. EMPTY_BODY_SHA256
  headers["X-Timestamp"] = ts
  headers["X-Signature"] = "keyId=" .. key_id .. ",signature=" .. hmac_hex(canonical)
  return wrk.format("GET", "/api/users?" .. query, headers)
end
