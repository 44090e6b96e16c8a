"""`run(argv, capsys)`: `lift-nb` in this process, as the CLI tests call it (pytest puts tests/ on sys.path)."""
from lift_nb.cli import main


def run(argv, capsys):
    "main(argv) in this process: (exit code, stdout, stderr)."
    try: rc = main(argv)
    except SystemExit as e: rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err
