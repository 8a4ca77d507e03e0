"""Reads the options a qopt binary accepts from its CLI11 `--help` text, and checks
argument lists (a container's args, a Dockerfile CMD) against them."""
import re
import subprocess
from dataclasses import dataclass, field


@dataclass
class Option:
    takes_value: bool
    required: bool = False
    env: str = ""  # CLI11's envname(): the variable that gives the value when the flag is absent


@dataclass
class Cli:
    binary: str
    options: dict = field(default_factory=dict)  # "--name" / "-n" -> Option

    def env_options(self):
        return {o.env: name for name, o in self.options.items() if o.env}


# CLI11 prints each option as "  -h,--help  TYPE [REQUIRED] [(Env:NAME)]   description";
# the description moves to the next line when the first column is long.
# The type column: TEXT, INT, TEXT:FILE, TEXT:{a,b}=default, TEXT=default, [a,b], ...
_TYPE = re.compile(r"^[A-Z][A-Z0-9_]*(?=$|[:={\[(])|^[\[{]")


def parse_help(text, binary="binary"):
    """Returns the top-level options of a CLI11 help text (subcommand lists are skipped)."""
    cli = Cli(binary)
    section = ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            section = line.strip().lower()
            continue
        if section != "options:" or not line.strip().startswith("-"):
            continue
        column = re.split(r"\s{2,}", line.strip())[0]
        words = column.split()
        names = [n for n in words[0].split(",") if n.startswith("-")]
        rest = words[1:]
        option = Option(takes_value=bool(rest) and rest[0] != "REQUIRED" and bool(_TYPE.match(rest[0])),
                        required="REQUIRED" in rest)
        for w in rest:
            m = re.match(r"^\(Env:(\w+)\)$", w)
            if m:
                option.env = m.group(1)
        for name in names:
            cli.options[name] = option
    return cli


def load_cli(binary):
    """Runs `binary --help`; returns (Cli, error message or "")."""
    try:
        run = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"cannot run `{binary} --help`: {e}"
    if run.returncode != 0:
        return None, f"`{binary} --help` exited {run.returncode}: {run.stderr.strip()[:300]}"
    cli = parse_help(run.stdout, binary)
    if len(cli.options) < 2:
        return None, f"read no options from `{binary} --help`"
    return cli, ""


def parse_args(cli, args):
    """Parses an argument list as the binary would. Returns ({flag: value}, [problems])."""
    values, problems = {}, []
    i = 0
    while i < len(args):
        arg = str(args[i])
        i += 1
        if not arg.startswith("-"):
            problems.append(f"unexpected argument {arg!r} (no option takes it)")
            continue
        name, eq, value = arg.partition("=")
        option = cli.options.get(name)
        if option is None:
            problems.append(f"{name} is not an option of {cli.binary} (its --help lists "
                            f"{', '.join(sorted(n for n in cli.options if n.startswith('--')))})")
            continue
        if option.takes_value and not eq:
            if i >= len(args) or str(args[i]).startswith("-"):
                problems.append(f"{name} needs a value")
                continue
            value = str(args[i])
            i += 1
        elif not option.takes_value and eq:
            problems.append(f"{name} is a flag and takes no value")
            continue
        values[name] = value if option.takes_value else True
    for name, option in cli.options.items():
        if option.required and name.startswith("--") and name not in values:
            problems.append(f"{name} is required by {cli.binary} and missing")
    return values, problems
