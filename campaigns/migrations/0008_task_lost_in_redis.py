from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('campaigns', '0007_attempts_and_trust'),
    ]

    operations = [
        migrations.AddField(
            model_name='task',
            name='lost',
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
