"""``python -m tritattn``: print the environment report (:mod:`tritattn.environment`)."""
from tritattn.environment import environment_report

print(environment_report())
