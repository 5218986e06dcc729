from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("campaigns", "0009_task_worker_faults"),
    ]

    operations = [
        migrations.AddField(
            model_name='task',
            name='lost',
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
