# bash completion for coarchctl (installed to share/bash-completion/completions/coarchctl)
_coarchctl() {
    local cur prev words cword
    _init_completion 2>/dev/null || {
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    }
    local commands="index watch search jobs cancel repos remove embed mcp ping status shutdown version help"
    local global="--socket --json --no-autostart --timeout --help --version"
    local cmd= i
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --socket | --timeout) ((i++)) ;;
            -*) ;;
            *) cmd=${words[i]}; break ;;
        esac
    done
    case $prev in
        --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --repo | -r) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --mode | -m) COMPREPLY=($(compgen -W "hybrid semantic lexical" -- "$cur")); return ;;
        --lang) COMPREPLY=($(compgen -W "c cpp csharp go java javascript kotlin markdown python ruby rust shell text tsx typescript" -- "$cur")); return ;;
        --timeout | -k | --path | -p) return ;;
    esac
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands $global" -- "$cur"))
        return
    fi
    case $cmd in
        index) COMPREPLY=($(compgen -W "--wait --watch --quiet --verbose --json" -- "$cur") $(compgen -d -- "$cur")) ;;
        watch) COMPREPLY=($(compgen -W "--stop --json" -- "$cur") $(compgen -d -- "$cur")) ;;
        search) COMPREPLY=($(compgen -W "-k --repo --all --mode --lang --path --vimgrep -l --files-with-matches --json" -- "$cur")) ;;
        remove) COMPREPLY=($(compgen -W "--json" -- "$cur") $(compgen -d -- "$cur")) ;;
        cancel) COMPREPLY=($(compgen -W "--no-wait --json" -- "$cur")) ;;
        help) COMPREPLY=($(compgen -W "$commands" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "--json --help" -- "$cur")) ;;
    esac
}
complete -F _coarchctl coarchctl
