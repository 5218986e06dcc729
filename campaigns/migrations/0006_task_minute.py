"""The per-minute rollup of completions (TaskMinute), filled from the ledgers already there so
that the dashboard's series keeps its history (campaigns.services.rollups)."""
import django.db.models.deletion
from django.db import migrations, models


def backfill(apps, schema_editor):
    from campaigns.services.rollups import task_minutes_rebuild

    task_minutes_rebuild(using=schema_editor.connection.alias, apps=apps)


class Migration(migrations.Migration):

    dependencies = [
        ("campaigns", "0005_dashboard_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskMinute",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("minute", models.DateTimeField()),
                ("done", models.PositiveIntegerField(default=0)),
                ("failed", models.PositiveIntegerField(default=0)),
                ("campaign", models.ForeignKey(db_index=False,
                                               on_delete=django.db.models.deletion.CASCADE,
                                               related_name="task_minutes",
                                               to="campaigns.campaign")),
            ],
            options={
                "ordering": ["campaign", "minute"],
                "constraints": [models.UniqueConstraint(fields=("campaign", "minute"),
                                                        name="one_task_minute")],
            },
        ),
        # Backwards: the table goes, so there is nothing to undo.
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
