#!/usr/bin/env bash
# test-nvim.sh - the Neovim plugin (contrib/nvim) headless against a real coarchd with the real
# model: no daemon running at first, so the plugin's first request autostarts one (through
# coarchctl); a search before anything is indexed says so; :CoarchIndex indexes the project
# with progress ending in "done" in require('coarch').statusline(); :CoarchSearch fills the
# quickfix list with the right file and line; :CoarchPick's results; :CoarchStatus.
#
# Needs nvim (0.7 or later; scripts/setup installs Debian's) and the model: without either the
# test skips (77), or fails when CI is set.  Env (set by meson): COARCHCTL, COARCHD,
# COARCH_TEST_SOURCE_DIR.
set -u
ctl=${COARCHCTL:?} daemon=${COARCHD:?} src=${COARCH_TEST_SOURCE_DIR:?}
model_dir=${COARCH_TEST_MODEL_DIR:-$HOME/.local/share/coarch/models/all-MiniLM-L6-v2}
skip() {
    if [[ -n ${CI:-} ]]; then
        echo "FAIL: $1 (CI needs it)"
        exit 1
    fi
    echo "SKIP: $1"
    exit 77
}
command -v nvim >/dev/null || skip "no nvim here (scripts/setup installs neovim)"
[[ -f $model_dir/config.json ]] || skip "no embedding model at $model_dir (run scripts/fetch-model)"
[[ -x $daemon ]] || skip "coarchd not built"

tmp=$(mktemp -d /tmp/coarch-test-nvim.XXXXXX)
export COARCH_SOCKET=$tmp/run/coarchd.sock COARCH_DATA_DIR=$tmp/data COARCH_MODEL=$model_dir
export COARCHD=$daemon
unset COARCH_CONFIG COARCH_MEMORY_LIMIT_MB
mkdir -p "$tmp/run" "$tmp/repo/src"
cleanup() {
    "$ctl" --no-autostart shutdown >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
cat >"$tmp/repo/src/config.py" <<'EOF'
"""Configuration handling."""


def parse_config_file(path):
    settings = {}
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            key, sep, value = raw.strip().partition("=")
            if sep:
                settings[key.strip()] = value.strip()
    return settings


def polygon_area(points):
    area = 0.0
    for i, p in enumerate(points):
        q = points[(i + 1) % len(points)]
        area += p[0] * q[1] - q[0] * p[1]
    return abs(area) / 2.0
EOF
git -C "$tmp/repo" init -q

cat >"$tmp/test.lua" <<EOF
local out = io.open('$tmp/result.txt', 'w')
local failures = 0
local function check(name, cond, detail)
  out:write((cond and 'ok: ' or 'FAIL: ') .. name .. (cond and '' or (': ' .. vim.inspect(detail))) .. '\n')
  if not cond then failures = failures + 1 end
end
local ok, err = pcall(function()
  vim.cmd('runtime! plugin/coarch.lua')
  local c = require('coarch').setup({ coarchctl = '$ctl' })
  check('commands defined', vim.fn.exists(':CoarchSearch') == 2 and vim.fn.exists(':CoarchIndex') == 2
    and vim.fn.exists(':CoarchPick') == 2 and vim.fn.exists(':CoarchStatus') == 2)
  check('socket path from COARCH_SOCKET', c.socket_path() == '$COARCH_SOCKET', c.socket_path())

  -- The first request starts coarchd (nothing runs yet); nothing is indexed.
  local items, serr = c.search('parse a configuration file')
  check('autostart, then nothing indexed is said', items == nil and serr:find('nothing is indexed') ~= nil, serr)

  vim.cmd('cd $tmp/repo/src')
  vim.cmd('edit $tmp/repo/src/config.py')
  vim.cmd('CoarchIndex')
  local done = vim.wait(120000, function() return c.statusline():find(' done: %d') ~= nil end, 50) -- the final line, not a last progress one
  check('CoarchIndex progress ends done', done, c.statusline())
  check('progress names the project root', c.statusline():find('$tmp/repo', 1, true) ~= nil, c.statusline())

  vim.cmd('CoarchSearch read key value settings from a file')
  local qf = vim.fn.getqflist()
  local first = qf[1] or {}
  local want
  for i, l in ipairs(vim.fn.readfile('$tmp/repo/src/config.py')) do
    if l:find('def parse_config_file', 1, true) then want = want or i end
  end
  check('quickfix has results', #qf >= 1, qf)
  check('first result is the right file', vim.fn.bufname(first.bufnr or 0) == '$tmp/repo/src/config.py'
    or vim.fn.fnamemodify(vim.fn.bufname(first.bufnr or 0), ':p') == '$tmp/repo/src/config.py', vim.fn.bufname(first.bufnr or 0))
  check('first result is the right line', first.lnum == want, { first.lnum, want })
  check('quickfix title', vim.fn.getqflist({ title = 1 }).title == 'coarch: read key value settings from a file')
  check('text names the symbol', (first.text or ''):find('parse_config_file', 1, true) ~= nil, first.text)

  local picked = c.search('area of a polygon', { k = 3 })
  check('pick results', picked and picked[1] and picked[1].user_data.symbol == 'polygon_area', picked)

  local lines, st_err = c.status()
  check('status', lines and lines[1]:find('coarchd') ~= nil, st_err or lines)

  -- A connection lost (daemon restarted, here: our side closed) is reopened by the next call.
  c.disconnect()
  local again = c.search('polygon_area', { mode = 'lexical' })
  check('reconnects', again and #again >= 1, again)
end)
if not ok then
  out:write('FAIL: lua error: ' .. tostring(err) .. '\n')
  failures = failures + 1
end
out:close()
vim.cmd(failures == 0 and 'qa!' or 'cq')
EOF
timeout 300 nvim --headless -u NONE -i NONE --cmd "set rtp^=$src/contrib/nvim" \
    -c "luafile $tmp/test.lua" >"$tmp/nvim.out" 2>&1
rc=$?
cat "$tmp/result.txt" 2>/dev/null
if [[ $rc -ne 0 ]]; then
    echo "FAIL: nvim exited $rc"
    cat "$tmp/nvim.out"
    tail -n 20 "$tmp/data/coarchd.log" 2>/dev/null
    exit 1
fi
echo "all nvim checks passed"
