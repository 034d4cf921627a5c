from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("networks", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="invitation",
            name="enrollment_url",
            field=models.CharField(blank=True, max_length=2048),
        ),
    ]
