"""exit_without_teardown: the exit code and every flushed line reach the parent."""
import subprocess
import sys


def test_code_and_buffered_output_survive_the_early_exit(tmp_path):
    script = tmp_path / "finish.py"
    script.write_text("import sys\n"
                      "from cpc.utils.cli import exit_without_teardown\n"
                      "print('last line on stdout', end='')\n"
                      "sys.stderr.write('last line on stderr')\n"
                      "exit_without_teardown(3)\n"
                      "print('never printed')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 3
    assert out.stdout == "last line on stdout"  # block-buffered into a pipe, flushed anyway
    assert out.stderr == "last line on stderr"
