"""The dashboard's index: counts by state, rates and the per-minute series of one campaign are
read from (campaign, state, finished_at) alone, never from the table's rows (bench_dashboard.py:
the campaign page over a 1,000,000-task ledger in SQLite went from ~1.8 s to under 300 ms)."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("campaigns", "0003_campaign_cancelled_state"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="task",
            index=models.Index(fields=["campaign", "state", "finished_at"],
                               name="task_campaign_state_finished"),
        ),
    ]
