# bash completion for pcopy(1)                                     -*- shell-script -*-
#
# Installed as share/bash-completion/completions/pcopy, where bash-completion loads it on demand.
# Self-contained: it does not need bash-completion's helper functions, so it also works when simply
# sourced. The options and their values must follow `pcopy --help` (src/cli.cpp).

_pcopy() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local prev=""
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}

    # The words before this one, read as pcopy reads them (getopt): the word after an option that
    # takes a value (or after a group of short options ending in -j) is that value, whatever it
    # looks like, a long option also when shortened (_pcopy_long); "--" ends the options, unless
    # it is such a value. After it every word is SRC or
    # DST: files and directories.
    local i word waiting=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [[ -n $waiting ]]; then
            [[ $word == "=" ]] && continue  # "--opt" "=" "VALUE": '=' in COMP_WORDBREAKS
            waiting=""
            continue
        fi
        case $word in
            --) _pcopy_paths "$cur"; return 0 ;;
            --*=*) ;;
            --*) _pcopy_takes_value "$(_pcopy_long "$word")" && waiting=$(_pcopy_long "$word") ;;
            -*j) waiting=-j ;;
        esac
    done

    # The option whose value is being completed, in any of the shapes bash hands over:
    #   --opt VALUE              separate words
    #   --opt = VALUE, --opt =   '=' in COMP_WORDBREAKS (the default): the word is VALUE alone
    #   --opt=VALUE              '=' not in COMP_WORDBREAKS: the word is all of it
    local opt="" value="" prefix=""
    if [[ $cur == "=" && $waiting == --* ]]; then
        opt=$waiting
    elif [[ $prev == "=" && -n $waiting ]]; then
        opt=$waiting value=$cur
    elif [[ $cur == --*=* ]]; then
        opt=$(_pcopy_long "${cur%%=*}") value=${cur#*=} prefix="${cur%%=*}="
    elif [[ -n $waiting ]]; then
        opt=$waiting value=$cur
    fi

    case $opt in
        --progress | --reflink)
            mapfile -t COMPREPLY < <(compgen -P "$prefix" -W "auto always never" -- "$value")
            return 0
            ;;
        --exclude-from | --manifest)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -f -- "$value")
            [[ -n $prefix ]] && COMPREPLY=("${COMPREPLY[@]/#/$prefix}")
            return 0
            ;;
        -j | --jobs | --exclude | --include)
            # A number or a glob pattern: nothing sensible to offer.
            COMPREPLY=()
            return 0
            ;;
    esac

    if [[ $cur == -* ]]; then
        local opts="-h --help --version
            -j --jobs -a --archive -L --dereference -x --one-file-system --reflink=
            --no-copy-file-range --no-io-uring
            -u --update --checksum --ignore-existing --no-clobber --delete
            --exclude --include --exclude-from
            -n --dry-run --verify --fsync --inplace --fail-fast
            --progress= -q --quiet -v --verbose --json --manifest"
        mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
        # --progress= and --reflink= take their value in the same word: no space after them.
        if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]]; then
            compopt -o nospace 2>/dev/null
        fi
        return 0
    fi

    _pcopy_paths "$cur"
    return 0
}

# The long option `$1` names, as pcopy reads it: the name itself, or the one long option it is the
# beginning of (`--prog` is --progress); else `$1` unchanged (unknown or ambiguous).
_pcopy_long() {
    local name long found=""
    for long in help version jobs archive dereference one-file-system reflink no-copy-file-range \
        no-io-uring update checksum ignore-existing no-clobber delete exclude include exclude-from \
        dry-run verify fsync inplace fail-fast progress quiet verbose json manifest; do
        name=--$long
        [[ $name == "$1" ]] && { printf '%s' "$1"; return; }
        if [[ $name == "$1"* ]]; then
            [[ -n $found ]] && { printf '%s' "$1"; return; }
            found=$name
        fi
    done
    printf '%s' "${found:-$1}"
}

_pcopy_takes_value() {
    case $1 in
        --jobs | --reflink | --exclude | --include | --exclude-from | --progress | --manifest) return 0 ;;
    esac
    return 1
}

# SRC and DST: a tree or a single file, so any name.
_pcopy_paths() {
    compopt -o filenames 2>/dev/null
    mapfile -t COMPREPLY < <(compgen -f -- "$1")
}

complete -F _pcopy pcopy
