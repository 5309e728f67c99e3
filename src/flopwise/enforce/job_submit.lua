--[[
flopwise admission for Slurm: job_submit/lua (Slurm >= 22.05). Installed by `flopwise enforce slurm plugin`.

slurmctld calls slurm_job_submit under its job write lock, so this file makes no network call: it reads the
decision cache written by `flopwise enforce slurm agent` (a Lua table, replaced atomically) and keeps, in
slurmctld's memory, a ledger of the jobs it admitted that the cache does not yet count. Submissions are
serialized by the lock, so two jobs can never both spend the same remaining dollars.

For a job charged to an account flopwise manages:
  * worst case = GPUs x time limit x the GPU type's price (and GPUs x time limit device-hours);
  * a hard budget whose remaining amount (less the ledger) is below the worst case rejects the job, and sbatch
    prints flopwise's reason; a soft one lets it through and logs a warning;
  * a cache older than its max_age_s fails closed for hard budgets (the job is rejected with a message saying
    so) and open, logged, for soft ones;
  * an admitted job's comment starts with "flopwise:adm=<admission id>"; until the job starts, its worst case
    stays in this ledger (and in the cache's "undecided" charges, which survive a slurmctld restart); when it
    starts the agent reports it to the flopwise server by job id, then settles it from sacct, and cancels it
    if the server's full decision (policies, quotas, every budget unit) denies it.
  * a job whose comment names a compute request ("flopwise:request=<id>", filed with `flopwise request create`)
    runs on that request's approval instead: approved, it is admitted (the request already holds its budget);
    pending (or not yet in the cache), it is held (priority 0) and the agent releases it once the request is
    approved; denied, cancelled or expired, it is rejected. This is Slurm's "wait" verb for approvals.
Accounts the cache does not list are left alone.
]]

local CACHE_PATH = "@CACHE_PATH@"
local NO_VAL = 4294967294
local MICRO = 1000000

local epoch = os.time()
local seq = 0
-- admission id -> {budget id -> amount in micro-units}; entries leave once the cache lists them as decided
local ledger = {}

local cached, cached_head = nil, nil

-- the cache, parsed again only when its first line (which carries generated_at) changes
local function load_cache()
  local f, ferr = io.open(CACHE_PATH, "r")
  if f == nil then
    return nil, ferr
  end
  local head = f:read("*l")
  f:close()
  if cached ~= nil and head == cached_head then
    return cached
  end
  local chunk, err = loadfile(CACHE_PATH)
  if not chunk then
    return nil, err
  end
  setfenv(chunk, {})
  local ok, data = pcall(chunk)
  if not ok or type(data) ~= "table" then
    return nil, tostring(data)
  end
  cached, cached_head = data, head
  return data
end

-- GPUs asked for in a TRES string such as "gres:gpu:h100:2", "gres/gpu=4", "gpu:2" or "gres:gpu"
local function parse_gpus(spec)
  if spec == nil or spec == "" then
    return 0, nil
  end
  local total, gtype = 0, nil
  for item in string.gmatch(spec, "[^,]+") do
    local rest = string.match(item, "gpu(.*)$")
    if rest ~= nil then
      local t, n = string.match(rest, "^[:/]([%w%-_.]+)[:=](%d+)$")
      if t == nil then
        n = string.match(rest, "^[:=](%d+)$")
        if n == nil then
          t = string.match(rest, "^[:/]([%w%-_.]+)$")
          n = 1
        end
      end
      total = total + tonumber(n)
      gtype = t or gtype
    end
  end
  return total, gtype
end

local function usd(micro)
  return string.format("$%.2f", micro / MICRO)
end

local function reject(msg)
  slurm.log_user("flopwise: " .. msg)
  slurm.log_info("flopwise: rejected: %s", msg)
  return slurm.ERROR
end

function slurm_job_submit(job_desc, part_list, submit_uid)
  local cache, err = load_cache()
  if cache == nil then
    return reject("the decision cache " .. CACHE_PATH .. " cannot be read (" .. tostring(err) ..
      "); start `flopwise enforce slurm agent` on the controller")
  end
  local account = job_desc.account or job_desc.default_account
  local acct = account and cache.accounts[account]
  if acct == nil then
    return slurm.SUCCESS
  end
  for token, _ in pairs(cache.decided or {}) do
    ledger[token] = nil
  end

  local function tag()
    seq = seq + 1
    local token = string.format("%d-%d", epoch, seq)
    local text = "flopwise:adm=" .. token
    if job_desc.comment ~= nil and job_desc.comment ~= "" then
      text = text .. " " .. job_desc.comment
    end
    job_desc.comment = text
    return token
  end

  -- a job tied to a compute request waits for (or runs on) that request's approval
  local request_id = job_desc.comment and string.match(job_desc.comment, "flopwise:request=(%d+)")
  if request_id ~= nil then
    local req = (cache.requests or {})[request_id]
    if req ~= nil and req.account ~= account then
      return reject("compute request " .. request_id .. " is for account " .. req.account .. ", not " .. account)
    end
    local state = req and req.state or "unknown"
    if state == "denied" or state == "cancelled" or state == "expired" then
      return reject("compute request " .. request_id .. " is " .. state .. "; file a new one " ..
        "(flopwise request create) or submit without flopwise:request=")
    end
    if state ~= "approved" then
      job_desc.priority = 0
      slurm.log_user("flopwise: held until compute request " .. request_id .. " is approved " ..
        "(flopwise request show " .. request_id .. "); it is released then")
    end
    tag()
    return slurm.SUCCESS
  end

  -- the job's worst case
  local per_node, ptype = parse_gpus(job_desc.tres_per_node)
  local per_job, jtype = parse_gpus(job_desc.tres_per_job)
  local nodes = job_desc.min_nodes
  if nodes == nil or nodes >= NO_VAL or nodes < 1 then
    nodes = 1
  end
  local gpus = per_node * nodes + per_job
  local gtype = ptype or jtype or cache.default_gpu_type
  local minutes = job_desc.time_limit
  if minutes == nil or minutes >= NO_VAL then
    return reject("account " .. account .. " is budgeted: give the job a time limit (sbatch --time=HH:MM:SS); " ..
      "its worst case is GPUs x time limit x price")
  end
  local rate = cache.gpu_usd_micro_per_h[gtype]
  if gpus > 0 and rate == nil then
    return reject("GPU type '" .. tostring(gtype) .. "' has no price in flopwise's Slurm configuration; " ..
      "ask for one of its types (--gres=gpu:<type>:N)")
  end
  local need = {
    usd = math.ceil(gpus * (rate or 0) * minutes / 60),
    device_hours = math.ceil(gpus * MICRO * minutes / 60),
  }

  local age = os.time() - cache.generated_at
  local stale = age > cache.max_age_s
  local charges = {}
  for _, id in ipairs(acct.budgets) do
    local b = cache.budgets[id]
    local amount = need[b.unit]
    if amount ~= nil then
      if stale then
        if b.hard then
          return reject(string.format("the decision cache is %d s old (limit %d s), so hard budget '%s' " ..
            "fails closed; is `flopwise enforce slurm agent` running?", age, cache.max_age_s, b.name))
        end
        slurm.log_info("flopwise: cache %d s old; soft budget '%s' fails open for account %s",
          age, b.name, account)
      else
        local pending = 0
        for _, entry in pairs(ledger) do
          pending = pending + (entry[id] or 0)
        end
        for token, entry in pairs(cache.undecided or {}) do
          if ledger[token] == nil then
            pending = pending + (entry[id] or 0)
          end
        end
        local left = b.remaining_micro - pending
        if amount > left then
          if b.hard then
            local left_text = b.unit == "usd" and usd(math.max(left, 0)) or
              string.format("%.2f device-hours", math.max(left, 0) / MICRO)
            local need_text = b.unit == "usd" and usd(amount) or
              string.format("%.2f device-hours", amount / MICRO)
            return reject(string.format("hard budget '%s' has %s left; this job's worst case is %s " ..
              "(%d GPU(s) x %d min). Shorten --time, use fewer GPUs, or ask for more budget.",
              b.name, left_text, need_text, gpus, minutes))
          end
          slurm.log_info("flopwise: soft budget '%s' overrun by job of account %s: allowed with a warning",
            b.name, account)
          slurm.log_user("flopwise: warning: soft budget '" .. b.name .. "' will be overrun by this job")
        end
      end
      charges[id] = amount
    end
  end

  ledger[tag()] = charges
  return slurm.SUCCESS
end

-- A user may not raise what a budgeted job can spend after admission (its GPUs, time limit or account):
-- they resubmit instead. Root (the agent, an operator) may.
function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  if modify_uid == 0 then
    return slurm.SUCCESS
  end
  local cache = load_cache()
  local account = job_rec.account
  if cache == nil or account == nil or cache.accounts[account] == nil then
    if cache ~= nil and job_desc.account ~= nil and cache.accounts[job_desc.account] ~= nil then
      return reject("move the job to account " .. job_desc.account .. " by resubmitting it, so flopwise decides it")
    end
    return slurm.SUCCESS
  end
  local changes_time = job_desc.time_limit ~= nil and job_desc.time_limit < NO_VAL
  local changes_gpus = (job_desc.tres_per_node ~= nil and job_desc.tres_per_node ~= "") or
    (job_desc.tres_per_job ~= nil and job_desc.tres_per_job ~= "") or
    (job_desc.min_nodes ~= nil and job_desc.min_nodes < NO_VAL)
  local changes_account = job_desc.account ~= nil and job_desc.account ~= account
  if changes_time or changes_gpus or changes_account then
    return reject("the job's GPUs, nodes, time limit and account were admitted against account " .. account ..
      "'s budgets; resubmit the job to change them")
  end
  return slurm.SUCCESS
end

slurm.log_info("flopwise: job_submit.lua loaded (cache %s)", CACHE_PATH)
return slurm.SUCCESS
