"""Shell completion for bash and zsh, generated from the commands' own argparse parsers.

kvminst hands the parsers in (the library imports nothing of kvm/cli) and writes
ROOT/completion/kvm.bash and kvm.zsh: so the completion always lists the options of the
commands installed, and nothing is kept by hand. What is known only at completion time is
looked up then: VM names (the folders of ROOT/vm), snapshot names (`ROOT/snap list VM -H`,
which needs no root), images (ROOT/images) and pools (`zpool list`). The root is the line's
--root, else KVM_ROOT, else the folder of a typed ./COMMAND, else the root kvminst wrote.

The script is plain sh `case` statements and one function over COMP_WORDS/COMP_CWORD,
which zsh runs through its bashcompinit; one text serves both shells.
"""

import argparse

from kvm.conf.templating import render

# positionals by their dest: what their values are
POSITIONAL_KINDS = {"name": "vm", "old": "vm", "src": "vm", "snap": "snap", "iso": "file"}
# no VM exists yet by that name: nothing to offer
NEW_NAMES = {"vmcreate": {"name"}, "vmrecv": {"name"}}
# option values by metavar or option name
OPTION_KINDS = {"DIR": "dir", "ROOT": "dir", "FILE": "file", "PATH": "file", "IMAGE": "image",
                "--iso": "file", "--pool": "pool", "--snapshot": "snap", "--rcdir": "dir", "--loader": "file"}


def _flag_actions(parser):
    """The options a user is shown (--help's), without the hidden ones."""
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


def _takes_value(action):
    return action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction)


def _option_kind(action):
    if action.choices:
        return "words:" + " ".join(map(str, action.choices))
    for key in (action.metavar, *action.option_strings):
        if key in OPTION_KINDS:
            return OPTION_KINDS[key]
    return "none"


def _positional_kinds(command, parser, verbs):
    kinds = []
    for a in parser._actions:
        if a.option_strings:
            continue
        if a.choices or (a.dest == "verb" and verbs):
            kinds.append("words:" + " ".join(a.choices or verbs))
        elif a.dest in NEW_NAMES.get(command, ()):
            kinds.append("none")
        else:
            kinds.append(POSITIONAL_KINDS.get(a.dest, "none"))
    return kinds


def describe(command, parser, verbs=()):
    """(options, options taking a value, {option: kind}, [positional kinds]) of one parser."""
    flags = _flag_actions(parser)
    options = [s for a in flags for s in a.option_strings]
    valued = {s: _option_kind(a) for a in flags if _takes_value(a) for s in a.option_strings}
    return options, valued, _positional_kinds(command, parser, verbs)


def _case_spec(command, parser, verbs):
    options, valued, kinds = describe(command, parser, verbs)
    return (f"\t{command}) opts='{' '.join(options)}'; takes='{' '.join(valued)}'; "
            f"kinds='{' '.join(k.replace(' ', ',') for k in kinds)}' ;;")


def _case_values(command, parser, verbs):
    _, valued, _ = describe(command, parser, verbs)
    return [f"\t'{command} {opt}') echo '{kind.replace(' ', ',')}' ;;" for opt, kind in valued.items()]


def bash_script(parsers, root, version, verbs=None, on_path=()):
    """The bash completion text. parsers: {command: ArgumentParser}; verbs: {command: [verb words]}
    for a verb positional without argparse choices (snap's, of which any prefix is accepted);
    on_path: the commands pip puts on PATH (completed by their bare name too)."""
    verbs = verbs or {}
    specs = "\n".join(_case_spec(c, p, verbs.get(c, ())) for c, p in parsers.items())
    values = "\n".join(line for c, p in parsers.items() for line in _case_values(c, p, verbs.get(c, ())))
    return render("completion.bash.j2", None, root=root, version=version, specs=specs, values=values,
                  commands=" ".join(parsers), on_path=" ".join(on_path))


def zsh_script(bash_text):
    """The zsh completion: the bash one through zsh's bashcompinit."""
    return ("# kvm completion for zsh: source it from ~/.zshrc (the bash completion through bashcompinit)\n"
            "(( $+functions[compdef] )) || { autoload -U +X compinit && compinit; }\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash_text)


def scripts(parsers, root, version, verbs=None, on_path=()):
    """{file name in ROOT/completion: text} for both shells."""
    bash = bash_script(parsers, root, version, verbs, on_path)
    return {"kvm.bash": bash, "kvm.zsh": zsh_script(bash)}
