-- coarch.nvim commands (see lua/coarch/init.lua).  Loaded once.
if vim.g.loaded_coarch then
  return
end
vim.g.loaded_coarch = true

local function coarch()
  return require('coarch')
end

vim.api.nvim_create_user_command('CoarchSearch', function(o)
  coarch().search_to_quickfix(o.args)
end, { nargs = '+', desc = 'coarch: search into the quickfix list' })

vim.api.nvim_create_user_command('CoarchPick', function(o)
  coarch().pick(o.args)
end, { nargs = '+', desc = 'coarch: search and pick a result' })

vim.api.nvim_create_user_command('CoarchIndex', function(o)
  local job, err = coarch().index(o.args)
  if not job then
    vim.api.nvim_echo({ { 'coarch: ' .. err, 'ErrorMsg' } }, true, {})
    return
  end
  vim.api.nvim_echo({ { string.format('coarch: job %d %s for %s', job.job, job.state, job.repo) } },
    false, {})
end, { nargs = '?', complete = 'dir', desc = 'coarch: index the project' })

vim.api.nvim_create_user_command('CoarchStatus', function()
  local lines, err = coarch().status()
  if not lines then
    vim.api.nvim_echo({ { 'coarch: ' .. err, 'ErrorMsg' } }, true, {})
    return
  end
  vim.api.nvim_echo({ { table.concat(lines, '\n') } }, true, {})
end, { desc = 'coarch: daemon status' })

vim.api.nvim_create_autocmd('VimLeavePre', {
  callback = function()
    if package.loaded['coarch'] then
      require('coarch').disconnect()
    end
  end,
})
