# fish completion for coarchctl (installed to share/fish/vendor_completions.d/coarchctl.fish)
set -l commands index watch search jobs cancel repos remove embed mcp ping status shutdown version help
complete -c coarchctl -f
complete -c coarchctl -n "not __fish_seen_subcommand_from $commands" -a "$commands"
complete -c coarchctl -l socket -r -d 'the daemon socket'
complete -c coarchctl -l json -d 'print JSON'
complete -c coarchctl -l no-autostart -d 'do not start coarchd'
complete -c coarchctl -l timeout -x -d 'seconds to wait'
complete -c coarchctl -n "__fish_seen_subcommand_from index" -l wait -l watch -l quiet -l verbose
complete -c coarchctl -n "__fish_seen_subcommand_from watch" -l stop
complete -c coarchctl -n "__fish_seen_subcommand_from index watch remove" -a "(__fish_complete_directories)"
complete -c coarchctl -n "__fish_seen_subcommand_from search" -s k -x -d 'results'
complete -c coarchctl -n "__fish_seen_subcommand_from search" -l repo -x -a "(__fish_complete_directories)"
complete -c coarchctl -n "__fish_seen_subcommand_from search" -l all -d 'every repository'
complete -c coarchctl -n "__fish_seen_subcommand_from search" -l mode -x -a "hybrid semantic lexical"
complete -c coarchctl -n "__fish_seen_subcommand_from search" -l lang -x
complete -c coarchctl -n "__fish_seen_subcommand_from search" -l path -x
complete -c coarchctl -n "__fish_seen_subcommand_from search" -l vimgrep -d 'PATH:LINE:COL:TEXT'
complete -c coarchctl -n "__fish_seen_subcommand_from search" -s l -l files-with-matches -d 'files only'
complete -c coarchctl -n "__fish_seen_subcommand_from help" -a "$commands"
