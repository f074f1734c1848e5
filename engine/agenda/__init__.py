"""A business user's day (the agenda), a default plugin (``"agenda"``, ``"agenda.kinds"``): the home
page's panels (my tasks with a tick, my meetings, my open deals, recently viewed records), the task
list (mine and my team's), the calendar (day, week, month; drag to reschedule), and reminders before
a task is due or a meeting starts, sent by the platform scheduler.

What it shows is declared by the ``agenda`` document (spec.py, docs/metadata.md#agenda); which home
panels each role sees, in what order, by the role's ``home:`` list."""
