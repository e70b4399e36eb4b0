-- coarch.nvim: search and index code with coarchd from Neovim (0.7 and later).
--
-- Talks to coarchd's Unix socket directly: msgpack-RPC in length-prefixed frames
-- (proto/PROTOCOL.md), through vim.loop pipes and vim.mpack, no process per request.  When no
-- daemon answers, `coarchctl ping` is run once to start one (coarchctl's autostart: the same
-- rules, log and waiting as the shell's), unless setup{autostart = false}.
--
--   :CoarchSearch {query}   results into the quickfix list (one per definition) and open it
--   :CoarchPick {query}     the same results in vim.ui.select; jump to the chosen one
--   :CoarchIndex [dir]      index the project (git root of the current file or cwd), with
--                           progress in the echo area and require('coarch').statusline()
--   :CoarchStatus           the daemon's version, state, model and jobs
--
-- Searches are scoped like `coarchctl search`: the indexed repository that contains the
-- current working directory, else every indexed repository.
local M = {}

local uv = vim.loop

local config = {
  socket = nil, -- nil: the same default as coarchctl (see socket_path)
  coarchctl = 'coarchctl',
  autostart = true,
  k = 20,
  mode = 'hybrid',
  timeout_ms = 30000,
}

local state = {
  pipe = nil,
  buf = '',
  next_id = 0,
  pending = {}, -- id -> callback(err, result)
  progress = '', -- the latest progress line, for statusline()
  subscribed = false,
}

function M.setup(opts)
  config = vim.tbl_extend('force', config, opts or {})
  return M
end

-- The socket coarchd listens on, by coarchctl's rules.
function M.socket_path()
  if config.socket then
    return config.socket
  end
  local env = vim.env.COARCH_SOCKET
  if env and env ~= '' then
    return env
  end
  local xdg = vim.env.XDG_RUNTIME_DIR
  if xdg and xdg ~= '' then
    return xdg .. '/coarch/coarchd.sock'
  end
  local uid = uv.getuid and uv.getuid() or tonumber(vim.fn.system('id -u'))
  local run = '/run/user/' .. uid
  if vim.fn.isdirectory(run) == 1 then
    return run .. '/coarch/coarchd.sock'
  end
  local tmp = vim.env.TMPDIR
  if not tmp or tmp == '' then
    tmp = '/tmp'
  end
  return tmp .. '/coarch-' .. uid .. '/coarchd.sock'
end

-- ---- the connection ------------------------------------------------------------------------

local function u32be(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
end

local function on_progress(p)
  local line
  if p.state == 'done' or p.state == 'failed' or p.state == 'cancelled' then
    line = string.format('coarch: job %d %s: %d files, %d chunks (%s)', p.job, p.state,
      p.files_done or 0, p.chunks_done or 0, p.repo or '')
  else
    -- A run's last report says phase "done" before the job's final state arrives.
    local phase = (p.phase == 'done' and 'finishing') or p.phase or p.state
    line = string.format('coarch: job %d %s: files %d/%d, chunks %d/%d', p.job, phase,
      p.files_done or 0, p.files_total or 0, p.chunks_done or 0, p.chunks_total or 0)
  end
  state.progress = line
  vim.schedule(function()
    vim.api.nvim_echo({ { line } }, false, {})
    pcall(vim.cmd, 'redrawstatus')
  end)
end

local function close(reason)
  if state.pipe then
    pcall(function() state.pipe:close() end)
  end
  state.pipe = nil
  state.buf = ''
  state.subscribed = false
  local pending = state.pending
  state.pending = {}
  for _, cb in pairs(pending) do
    cb(reason or 'the connection to coarchd closed', nil)
  end
end

local function on_read(err, data)
  if err or not data then
    close(err and ('reading from coarchd: ' .. err) or nil)
    return
  end
  state.buf = state.buf .. data
  while #state.buf >= 4 do
    local b1, b2, b3, b4 = state.buf:byte(1, 4)
    local n = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    if #state.buf < 4 + n then
      break
    end
    local payload = state.buf:sub(5, 4 + n)
    state.buf = state.buf:sub(5 + n)
    local ok, msg = pcall(vim.mpack.decode, payload)
    if ok and type(msg) == 'table' then
      if msg[1] == 1 then
        local cb = state.pending[msg[2]]
        state.pending[msg[2]] = nil
        if cb then
          local e = msg[3]
          if e ~= nil and e ~= vim.NIL then
            cb(type(e) == 'table' and (e.message or 'error') or tostring(e), nil)
          else
            cb(nil, msg[4])
          end
        end
      elseif msg[1] == 2 and msg[2] == 'progress' then
        on_progress(msg[3])
      end
    end
  end
end

-- Connects synchronously (waiting up to 2 s); returns true or nil, message.
local function connect_once()
  local pipe = uv.new_pipe(false)
  local done, cerr = false, nil
  pipe:connect(M.socket_path(), function(err)
    cerr = err
    done = true
  end)
  vim.wait(2000, function() return done end, 10)
  if not done or cerr then
    pcall(function() pipe:close() end)
    return nil, cerr or 'timed out'
  end
  state.pipe = pipe
  pipe:read_start(on_read)
  return true
end

local function ensure_connected()
  if state.pipe then
    return true
  end
  local ok, err = connect_once()
  if ok then
    return true
  end
  if not config.autostart then
    return nil, string.format('coarchd is not running at %s (%s)', M.socket_path(), err)
  end
  -- coarchctl starts coarchd and waits until it answers.
  local cmd = { config.coarchctl }
  if config.socket then
    table.insert(cmd, '--socket')
    table.insert(cmd, config.socket)
  end
  table.insert(cmd, 'ping')
  local out = vim.fn.system(cmd)
  if vim.v.shell_error ~= 0 then
    return nil, 'could not start coarchd: ' .. vim.trim(out)
  end
  ok, err = connect_once()
  if not ok then
    return nil, string.format('coarchd started but %s does not answer (%s)', M.socket_path(), err)
  end
  return true
end

-- Sends a request; cb(err, result) runs on the event loop.
function M.request(method, params, cb)
  local ok, err = ensure_connected()
  if not ok then
    cb(err, nil)
    return
  end
  state.next_id = (state.next_id + 1) % 4294967296
  local id = state.next_id
  state.pending[id] = cb
  local payload = vim.mpack.encode({ 0, id, method, params or vim.empty_dict() })
  state.pipe:write(u32be(#payload) .. payload, function(werr)
    if werr then
      local pcb = state.pending[id]
      state.pending[id] = nil
      if pcb then
        pcb('writing to coarchd: ' .. werr, nil)
      end
    end
  end)
end

-- The same, waiting for the answer: returns result or nil, message.
function M.call(method, params, timeout_ms)
  local done, rerr, res = false, nil, nil
  M.request(method, params, function(err, result)
    rerr, res, done = err, result, true
  end)
  if not vim.wait(timeout_ms or config.timeout_ms, function() return done end, 10) then
    return nil, string.format('coarchd sent nothing for %d s', (timeout_ms or config.timeout_ms) / 1000)
  end
  if rerr then
    return nil, rerr
  end
  return res
end

local function err_echo(msg)
  vim.api.nvim_echo({ { 'coarch: ' .. msg, 'ErrorMsg' } }, true, {})
end

-- ---- search --------------------------------------------------------------------------------

-- The indexed repository containing dir (the deepest), and how many are indexed.
local function repo_of(dir, repos)
  local best
  for _, r in ipairs(repos or {}) do
    local p = r.path
    if (dir == p or dir:sub(1, #p + 1) == p .. '/' or p == '/') and (not best or #p > #best) then
      best = p
    end
  end
  return best
end

-- Results of a search as quickfix items; nil, message on failure.
function M.search(query, opts)
  opts = opts or {}
  if not query or vim.trim(query) == '' then
    return nil, 'usage: :CoarchSearch {query}'
  end
  local repos, err = M.call('repos')
  if not repos then
    return nil, err
  end
  if #(repos.repos or {}) == 0 then
    return nil, 'nothing is indexed yet: run :CoarchIndex in your project'
  end
  local params = { query = query, k = opts.k or config.k, mode = opts.mode or config.mode }
  params.repo = opts.repo or repo_of(vim.fn.fnamemodify(vim.fn.getcwd(), ':p'):gsub('/$', ''),
    repos.repos)
  local res
  res, err = M.call('search', params)
  if not res then
    return nil, err
  end
  local items = {}
  for _, h in ipairs(res.results or {}) do
    local first = (h.snippet or ''):match('^[^\n]*') or ''
    table.insert(items, {
      filename = h.repo .. '/' .. h.path,
      lnum = h.snippet_line or h.start_line,
      end_lnum = h.end_line,
      col = 1,
      text = string.format('%s%s[%.3f] %s', h.symbol ~= '' and h.symbol or '',
        h.symbol ~= '' and ' ' or '', h.score or 0, vim.trim(first)),
      user_data = h,
    })
  end
  return items
end

function M.search_to_quickfix(query)
  local items, err = M.search(query)
  if not items then
    err_echo(err)
    return
  end
  vim.fn.setqflist({}, ' ', { title = 'coarch: ' .. query, items = items })
  if #items == 0 then
    vim.api.nvim_echo({ { 'coarch: no results for ' .. query } }, false, {})
    return
  end
  vim.cmd('copen')
end

function M.pick(query)
  local items, err = M.search(query)
  if not items then
    err_echo(err)
    return
  end
  if #items == 0 then
    vim.api.nvim_echo({ { 'coarch: no results for ' .. query } }, false, {})
    return
  end
  vim.ui.select(items, {
    prompt = 'coarch: ' .. query,
    format_item = function(it)
      return string.format('%s:%d  %s', vim.fn.fnamemodify(it.filename, ':~:.'), it.lnum, it.text)
    end,
  }, function(it)
    if it then
      vim.cmd('edit ' .. vim.fn.fnameescape(it.filename))
      vim.api.nvim_win_set_cursor(0, { it.lnum, 0 })
    end
  end)
end

-- ---- index, status -------------------------------------------------------------------------

local function project_root(dir)
  local out = vim.fn.systemlist({ 'git', '-C', dir, 'rev-parse', '--show-toplevel' })
  if vim.v.shell_error == 0 and out[1] and out[1] ~= '' then
    return out[1]
  end
  return dir
end

-- Queues an index job for dir (default: the project of the current file, else cwd); returns
-- the job object or nil, message.  Progress arrives as echo lines and in statusline().
function M.index(dir)
  if not dir or dir == '' then
    local file = vim.api.nvim_buf_get_name(0)
    dir = file ~= '' and vim.fn.fnamemodify(file, ':p:h') or vim.fn.getcwd()
    dir = project_root(dir)
  end
  dir = vim.fn.fnamemodify(dir, ':p'):gsub('(.)/$', '%1')
  if vim.fn.isdirectory(dir) == 0 then
    return nil, dir .. ' is not a directory'
  end
  if not state.subscribed then
    local ok, err = M.call('subscribe', { events = { 'progress' } })
    if not ok then
      return nil, err
    end
    state.subscribed = true
  end
  return M.call('index', { path = dir })
end

function M.statusline()
  return state.progress
end

function M.status()
  local s, err = M.call('status')
  if not s then
    return nil, err
  end
  local lines = {
    string.format('coarchd %s (pid %d), %s, socket %s', s.version or '?', s.pid or 0,
      s.state or '?', s.socket or M.socket_path()),
  }
  if type(s.model) == 'table' then
    table.insert(lines, string.format('model: %s (%s, %s)', s.model.path or s.model.name or '?',
      s.model.backend or '?', s.model.state or (s.model.loaded and 'loaded' or 'not loaded')))
  end
  local jobs = M.call('jobs')
  for _, j in ipairs((jobs or {}).jobs or {}) do
    table.insert(lines, string.format('job %d %s: %d/%d files, %d/%d chunks, %s', j.job, j.state,
      j.files_done or 0, j.files_total or 0, j.chunks_done or 0, j.chunks_total or 0, j.repo))
  end
  return lines
end

-- Closes the connection (tests; VimLeavePre).
function M.disconnect()
  close('disconnected')
end

return M
