from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("campaigns", "0008_portal_jobs"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="worker_faults",
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
